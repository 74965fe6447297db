"""A local S3 API server for tests, the bench and `make demo-s3`: moto's standalone server on 127.0.0.1.

moto speaks the S3 REST API over HTTP (conditional writes included), runs in a
thread of this process on a free loopback port, needs no network, account or
Docker, and installs from PyPI (the test extra). One thing it does not do as S3
does: it checks If-None-Match and then stores in two steps, with no lock between,
so two simultaneous conditional creates of one key can both "succeed". S3, MinIO
and R2 decide it atomically; ``local_s3`` makes moto's PutObject atomic with a
lock, so what runs against it exercises lw's protocol rather than that gap.
"""

from __future__ import annotations

import logging
import os
import threading
from contextlib import contextmanager


@contextmanager
def local_s3():
    """moto's S3 server on a free loopback port, with dummy credentials in the environment -> endpoint URL.

    moto checks If-None-Match and stores in two steps; PutObject is made atomic here, as S3's is.
    """
    from moto.s3.responses import S3Response
    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    original = S3Response.put_object
    lock = threading.Lock()

    def atomic(self, *args, **kwargs):
        with lock:
            return original(self, *args, **kwargs)

    S3Response.put_object = atomic
    names = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_DEFAULT_REGION", "AWS_ENDPOINT_URL")
    saved = {name: os.environ.get(name) for name in names}
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    os.environ.update(AWS_ACCESS_KEY_ID="lw-local", AWS_SECRET_ACCESS_KEY="lw-local-secret", AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint)
    try:
        yield endpoint
    finally:
        server.stop()
        S3Response.put_object = original
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
