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

    from learnware_cli.experiment.local_s3 import local_s3

    with local_s3() as endpoint, tempfile.TemporaryDirectory(prefix="lw-demo-s3-") as cache:
        env = dict(os.environ, LW_CACHE=cache)
        boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="demo-bucket")
        make = os.environ.get("MAKE", "make")
        return subprocess.run([make, "demo", "DEMO_MARKET=s3://demo-bucket/market", *sys.argv[1:]], env=env).returncode

if __name__ == "__main__":
    sys.exit(main())
