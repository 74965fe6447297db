"""A market's objects by key: the few operations a market on object storage needs, and nothing else.

    get(key) -> bytes                 (KeyError if there is no such object)
    put(key, data)                    (replaces; readers see the old or the new object, never half)
    put_if_absent(key, data) -> bool  (conditional create: True if this call created it)
    list(prefix, start_after) -> [key, ...] in key order
    stat_list(prefix) -> [(key, size, mtime), ...]
    delete(key)

Two implementations:

- ``FsspecStore``: S3 and every server that speaks its API (MinIO, Ceph, R2, moto),
  through s3fs. The conditional create is S3's ``If-None-Match: *`` on PutObject
  (answered 412 PreconditionFailed, or 409 ConditionalRequestConflict while another
  conditional write of that key is in flight: both mean "not created by this call").
  Credentials and endpoint come from where the AWS tools look for them (environment,
  ~/.aws profile, instance role; ``AWS_ENDPOINT_URL`` for a non-AWS server): never
  from the command line, never printed.
- ``LocalFolderStore``: a folder, for tests of the protocol (conditional create by
  ``os.link``, which fails if the name exists).

Every request is counted (``REQUESTS``, per process, so per command; the S3 store
counts the HTTP requests botocore sends, retries included).
"""

from __future__ import annotations

import collections
import os
import re
import time
import uuid
from pathlib import Path
from typing import Optional

REQUESTS: collections.Counter = collections.Counter()  # operation -> requests sent by this process

_URL = re.compile(r"^s3:/+([^/]+)/?(.*)$")


def is_remote(location) -> bool:
    """Does a --market value name a market on object storage (s3://BUCKET/PREFIX)?

    A --market value passes through pathlib, which folds 's3://b/p' into 's3:/b/p':
    both spellings are accepted.
    """
    return location is not None and _URL.match(str(location)) is not None


def normalize_url(location) -> str:
    """'s3:/bucket/prefix/' or 's3://bucket/prefix' -> 's3://bucket/prefix' (no trailing slash)."""
    match = _URL.match(str(location))
    if match is None:
        raise ValueError(f"not an s3:// address: {location}")
    bucket, prefix = match.group(1), match.group(2).strip("/")
    return f"s3://{bucket}/{prefix}" if prefix else f"s3://{bucket}"


def total_requests() -> int:
    return sum(REQUESTS.values())


class ObjectStore:
    """The interface (see the module docstring). Keys are '/'-separated, relative to the store's root."""

    url: str = ""

    def get(self, key: str) -> bytes:
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def put_if_absent(self, key: str, data: bytes) -> bool:
        raise NotImplementedError

    def list(self, prefix: str, start_after: Optional[str] = None) -> list[str]:
        raise NotImplementedError

    def stat_list(self, prefix: str) -> list[tuple[str, int, float]]:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError


# ----------------------------------------------------------------------------- a folder


class LocalFolderStore(ObjectStore):
    """Objects as files under a folder: put is write-then-rename, put_if_absent a hard link (fails if the name exists)."""

    def __init__(self, root):
        self.root = Path(root)
        self.url = str(self.root)

    def _path(self, key: str) -> Path:
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"bad object key {key!r}")
        return self.root / key

    def _temp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:12]}.tmp"
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        return tmp

    def get(self, key: str) -> bytes:
        REQUESTS["get"] += 1
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    def put(self, key: str, data: bytes) -> None:
        REQUESTS["put"] += 1
        path = self._path(key)
        os.replace(self._temp(path, data), path)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        REQUESTS["put"] += 1
        path = self._path(key)
        tmp = self._temp(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            tmp.unlink()

    def _walk(self, prefix: str) -> list[Path]:
        base = self.root / prefix.rpartition("/")[0] if "/" in prefix else self.root
        if not base.is_dir():
            return []
        out = []
        for path in base.rglob("*"):
            if path.is_file() and not path.name.startswith("."):
                key = path.relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    out.append(path)
        return out

    def list(self, prefix: str, start_after: Optional[str] = None) -> list[str]:
        REQUESTS["list"] += 1
        keys = sorted(p.relative_to(self.root).as_posix() for p in self._walk(prefix))
        return [k for k in keys if start_after is None or k > start_after]

    def stat_list(self, prefix: str) -> list[tuple[str, int, float]]:
        REQUESTS["list"] += 1
        out = []
        for path in self._walk(prefix):
            st = path.stat()
            out.append((path.relative_to(self.root).as_posix(), st.st_size, st.st_mtime))
        return sorted(out)

    def delete(self, key: str) -> None:
        REQUESTS["delete"] += 1
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            pass


# ----------------------------------------------------------------------------- S3 (s3fs)


_CONFLICT_CODES = {"PreconditionFailed", "ConditionalRequestConflict", "412", "409"}


def _client_error(exc: BaseException):
    """The botocore ClientError behind an s3fs exception (s3fs translates them to OSErrors), or None."""
    seen = 0
    while exc is not None and seen < 5:
        if hasattr(exc, "response") and isinstance(getattr(exc, "response"), dict):
            return exc
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def _is_conflict(exc: BaseException) -> bool:
    if isinstance(exc, FileExistsError):  # s3fs: 412 PreconditionFailed
        return True
    error = _client_error(exc)
    if error is None:
        return False
    info = error.response.get("Error", {})
    status = str(error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
    return info.get("Code") in _CONFLICT_CODES or status in ("409", "412")


class FsspecStore(ObjectStore):
    """s3://BUCKET/PREFIX through s3fs (one request per operation; list pages of 1000 keys)."""

    def __init__(self, url: str, **storage_options):
        try:
            import s3fs  # noqa: F401
        except ImportError:
            from learnware_cli.errors import MarketError

            raise MarketError("a market on S3 needs s3fs: pip install 'learnware-cli[s3]'") from None
        self.url = normalize_url(url)
        match = _URL.match(self.url)
        self.bucket, self.prefix = match.group(1), match.group(2).strip("/")
        self._options = storage_options
        self._fs = None

    @property
    def fs(self):
        if self._fs is None:
            import s3fs

            fs = s3fs.S3FileSystem(skip_instance_cache=True, **self._options)
            fs.connect()
            fs.s3.meta.events.register("before-send.s3", _count_request)
            self._fs = fs
        return self._fs

    def _key(self, key: str) -> str:
        if not key or key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
            raise ValueError(f"bad object key {key!r}")
        return f"{self.prefix}/{key}" if self.prefix else key

    def _relative(self, full: str) -> str:
        return full[len(self.prefix) + 1 :] if self.prefix else full

    def _run(self, coroutine_fn, *args):
        from fsspec.asyn import sync

        return sync(self.fs.loop, coroutine_fn, *args)

    def get(self, key: str) -> bytes:
        async def _get():
            response = await self.fs._call_s3("get_object", Bucket=self.bucket, Key=self._key(key))
            async with response["Body"] as body:
                return await body.read()

        try:
            return self._run(_get)
        except FileNotFoundError:
            raise KeyError(key) from None

    def put(self, key: str, data: bytes) -> None:
        self.fs.call_s3("put_object", Bucket=self.bucket, Key=self._key(key), Body=data)

    def put_if_absent(self, key: str, data: bytes) -> bool:
        try:
            self.fs.call_s3("put_object", Bucket=self.bucket, Key=self._key(key), Body=data, IfNoneMatch="*")
            return True
        except Exception as exc:  # noqa: BLE001 - classified just below
            if _is_conflict(exc):
                return False
            raise

    def _pages(self, prefix: str, start_after: Optional[str]):
        kwargs = {"Bucket": self.bucket, "Prefix": self._key(prefix.rstrip("/")) + ("/" if prefix.endswith("/") else "")}
        if start_after:
            kwargs["StartAfter"] = self._key(start_after)
        while True:
            page = self.fs.call_s3("list_objects_v2", **kwargs)
            yield page.get("Contents", [])
            if not page.get("IsTruncated"):
                return
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
            kwargs.pop("StartAfter", None)

    def list(self, prefix: str, start_after: Optional[str] = None) -> list[str]:
        return sorted(self._relative(item["Key"]) for page in self._pages(prefix, start_after) for item in page)

    def stat_list(self, prefix: str) -> list[tuple[str, int, float]]:
        return sorted(
            (self._relative(item["Key"]), int(item.get("Size", 0)), item["LastModified"].timestamp() if item.get("LastModified") else time.time())
            for page in self._pages(prefix, None)
            for item in page
        )

    def delete(self, key: str) -> None:
        self.fs.call_s3("delete_object", Bucket=self.bucket, Key=self._key(key))


def _count_request(request=None, **kwargs) -> None:
    """botocore 'before-send' hook: one HTTP request is going out (the operation name is in its context)."""
    name = "request"
    context = getattr(request, "context", None) or {}
    operation = context.get("operation_name") if isinstance(context, dict) else None
    method = getattr(request, "method", "")
    if operation:
        name = operation
    elif method == "GET" and "list-type=" in str(getattr(request, "url", "")):
        name = "list"
    elif method:
        name = {"GET": "get", "PUT": "put", "DELETE": "delete", "HEAD": "head"}.get(method, method.lower())
    REQUESTS[_short(name)] += 1


def _short(name: str) -> str:
    return {"GetObject": "get", "PutObject": "put", "ListObjectsV2": "list", "DeleteObject": "delete", "HeadObject": "head"}.get(name, name)


def open_store(url: str) -> ObjectStore:
    """The store of an s3:// address."""
    return FsspecStore(url)
