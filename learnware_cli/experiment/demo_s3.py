"""`make demo-s3`: the demo, unchanged, against a market in a bucket of a local S3 API server.

Starts moto's S3 server on 127.0.0.1 (a test extra, installed by `make install`), creates a
bucket, and runs `make demo DEMO_MARKET=s3://demo-bucket/market` with dummy credentials and a
private replica cache. With a real bucket, run `make demo DEMO_MARKET=s3://BUCKET/PREFIX` instead.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def main() -> int:
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        with tempfile.TemporaryDirectory(prefix="lw-demo-s3-") as cache:
            env = dict(os.environ, AWS_ACCESS_KEY_ID="demo", AWS_SECRET_ACCESS_KEY="demo-secret", AWS_DEFAULT_REGION="us-east-1",
                       AWS_ENDPOINT_URL=endpoint, LW_CACHE=cache)
            os.environ.update(env)
            boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="demo-bucket")
            make = os.environ.get("MAKE", "make")
            return subprocess.run([make, "demo", "DEMO_MARKET=s3://demo-bucket/market", *sys.argv[1:]], env=env).returncode
    finally:
        server.stop()


if __name__ == "__main__":
    sys.exit(main())
