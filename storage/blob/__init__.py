"""Blob stores: a local directory (embedded default) or any S3-compatible service."""

from storage.blob.base import BlobNotFound, BlobStore, BlobWriter
from storage.blob.local import LocalBlobStore
from storage.blob.s3 import S3BlobStore
from storage.settings import StorageSettings


def open_blob_store(settings: StorageSettings) -> BlobStore:
    if settings.blob_url.startswith("s3://"):
        return S3BlobStore(settings.blob_url, settings.s3_endpoint, settings.s3_region,
                           connect_timeout=settings.s3_connect_timeout,
                           read_timeout=settings.s3_read_timeout)
    if settings.blob_url:
        raise ValueError(f"TUNESERVE_BLOB_URL must be empty or s3://bucket/prefix, got "
                         f"{settings.blob_url!r}")
    return LocalBlobStore(settings.data_dir / "blobs")


__all__ = ["BlobNotFound", "BlobStore", "BlobWriter", "LocalBlobStore", "S3BlobStore",
           "open_blob_store"]
