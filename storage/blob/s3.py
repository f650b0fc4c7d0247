"""Blob store on any S3-compatible service (AWS S3, MinIO, SeaweedFS) through boto3."""

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from storage.blob.base import READ_CHUNK, BlobNotFound, BlobStore, BlobWriter

# S3 rejects multipart parts under 5 MiB (all but the last) and more than 10,000 parts.
MIN_PART = 5 << 20
MAX_PARTS = 10_000
# Small parts, several in flight: measured faster on SeaweedFS than fewer large ones, and
# memory stays bounded at PART_SIZE * (PARTS_IN_FLIGHT + 2). Largest blob: ~48 GiB.
PART_SIZE = MIN_PART
PARTS_IN_FLIGHT = 4


def _missing(err: ClientError) -> bool:
    code = err.response.get("Error", {}).get("Code", "")
    return code in ("404", "NoSuchKey", "NotFound", "NoSuchBucket")


class S3BlobWriter(BlobWriter):
    """Small blobs go up in one PUT; larger ones as a multipart upload whose parts upload in
    the background while the next part fills. Nothing is visible until the upload completes;
    an abort discards the uploaded parts."""

    def __init__(self, store: "S3BlobStore", key: str) -> None:
        super().__init__()
        self._store = store
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: deque[Future[dict[str, Any]]] = deque()
        self._done_parts: list[dict[str, Any]] = []

    def _write(self, data: bytes) -> None:
        self._buffer += data
        while len(self._buffer) >= PART_SIZE:
            # One copy out of the buffer; the remainder moves down in place.
            part = bytes(memoryview(self._buffer)[:PART_SIZE])
            del self._buffer[:PART_SIZE]
            self._send_part(part)

    def _send_part(self, body: bytes) -> None:
        s3, bucket, key = self._store.client, self._store.bucket, self._store.key(self._key)
        if self._upload_id is None:
            self._upload_id = s3.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
        while len(self._parts) >= PARTS_IN_FLIGHT:
            self._done_parts.append(self._parts.popleft().result())
        number = len(self._done_parts) + len(self._parts) + 1
        if number > MAX_PARTS:
            raise ValueError(f"blob {self._key!r} exceeds {MAX_PARTS} parts of {PART_SIZE} bytes")
        upload_id = self._upload_id

        def upload() -> dict[str, Any]:
            etag = s3.upload_part(
                Bucket=bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=body
            )["ETag"]
            return {"PartNumber": number, "ETag": etag}

        self._parts.append(self._store.pool.submit(upload))

    def _commit(self) -> None:
        s3, bucket, key = self._store.client, self._store.bucket, self._store.key(self._key)
        rest = bytes(self._buffer)
        self._buffer = bytearray()
        if self._upload_id is None:
            s3.put_object(Bucket=bucket, Key=key, Body=rest)
            return
        if rest:
            self._send_part(rest)
        while self._parts:
            self._done_parts.append(self._parts.popleft().result())
        s3.complete_multipart_upload(
            Bucket=bucket,
            Key=key,
            UploadId=self._upload_id,
            MultipartUpload={"Parts": self._done_parts},
        )

    def _abort(self) -> None:
        self._buffer = bytearray()
        for f in self._parts:
            f.cancel()
        for f in self._parts:
            if not f.cancelled():
                f.exception()
        if self._upload_id is not None:
            self._store.client.abort_multipart_upload(
                Bucket=self._store.bucket, Key=self._store.key(self._key), UploadId=self._upload_id
            )


class S3BlobStore(BlobStore):
    def __init__(
        self,
        url: str,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        create_bucket: bool = True,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
    ) -> None:
        if not url.startswith("s3://"):
            raise ValueError(f"S3 blob url must look like s3://bucket/prefix, got {url!r}")
        bucket, _, prefix = url[len("s3://") :].partition("/")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                max_pool_connections=32,
                connect_timeout=connect_timeout,
                read_timeout=read_timeout,
                retries={"max_attempts": 5, "mode": "standard"},
                # Over http SigV4 already hashes every body; over https TLS guards it. A CRC
                # on top costs CPU on the upload path for nothing.
                request_checksum_calculation="when_required",
            ),
        )
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3-part")
        if create_bucket:
            self._ensure_bucket()

    def _ensure_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as err:
            if not _missing(err):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    def key(self, key: str) -> str:
        return self.prefix + key

    def writer(self, key: str) -> BlobWriter:
        return S3BlobWriter(self, key)

    def read(self, key: str, start: int = 0, end: int | None = None) -> Iterator[bytes]:
        args: dict[str, Any] = {"Bucket": self.bucket, "Key": self.key(key)}
        if start or end is not None:
            if end is not None and end <= start:
                return iter(())
            args["Range"] = f"bytes={start}-{'' if end is None else end - 1}"
        try:
            body = self.client.get_object(**args)["Body"]
        except ClientError as err:
            if _missing(err):
                raise BlobNotFound(key) from None
            if err.response.get("Error", {}).get("Code") == "InvalidRange":
                return iter(())
            raise
        return self._chunks(body)

    @staticmethod
    def _chunks(body: Any) -> Iterator[bytes]:
        try:
            yield from body.iter_chunks(READ_CHUNK)
        finally:
            body.close()

    def size(self, key: str) -> int:
        try:
            # boto3 ships no types: the client's answers are Any.
            size: int = self.client.head_object(Bucket=self.bucket,
                                                Key=self.key(key))["ContentLength"]
            return size
        except ClientError as err:
            if _missing(err):
                raise BlobNotFound(key) from None
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.key(key))

    def list_objects(self, prefix: str) -> list[tuple[str, float]]:
        found: list[tuple[str, float]] = []
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=self.key(prefix)
        )
        for page in pages:
            found.extend((obj["Key"][len(self.prefix) :], obj["LastModified"].timestamp())
                         for obj in page.get("Contents", []))
        return sorted(found)

    def delete_prefix(self, prefix: str) -> None:
        keys = self.list_keys(prefix)
        for i in range(0, len(keys), 1000):
            self.client.delete_objects(
                Bucket=self.bucket,
                Delete={"Objects": [{"Key": self.key(k)} for k in keys[i : i + 1000]]},
            )

    def compose(self, key: str, sources: list[str]) -> int:
        """Server-side: a multipart upload whose parts are copies of the sources, so the bytes
        never pass through us. Falls back to streaming when a source is too small to be a part."""
        sizes = [self.size(s) for s in sources]
        if len(sources) < 2 or any(size < MIN_PART for size in sizes[:-1]):
            return super().compose(key, sources)
        target = self.key(key)
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=target)[
            "UploadId"
        ]

        def copy(number: int, source: str) -> dict[str, Any]:
            result = self.client.upload_part_copy(
                Bucket=self.bucket,
                Key=target,
                UploadId=upload_id,
                PartNumber=number,
                CopySource={"Bucket": self.bucket, "Key": self.key(source)},
            )
            return {"PartNumber": number, "ETag": result["CopyPartResult"]["ETag"]}

        try:
            parts = list(self.pool.map(copy, range(1, len(sources) + 1), sources))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=target, UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=target, UploadId=upload_id)
            raise
        return sum(sizes)
