"""External weights for the client to download (`save_weights_external`): each file behind a
signed URL, as the SDK's `get_external_weights_urls` answers and tinker-cookbook's
`weights.download` fetches with no key (plain urllib). A URL names the checkpoint, the file and
when it expires, signed with the checkpoint's own secret (`download_secret`, never shown): it
stops working when it expires or the checkpoint is deleted, and leads nowhere else."""

import hashlib
import hmac
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from urllib.parse import quote, urlencode

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.errors import APIError
from api.gate import SIGNED_DOWNLOADS
from api.tinker.schemas import ExternalWeightsUrls
from storage.blob import BlobStore
from storage.models import Project, TinkerCheckpoint

# How long a signed URL works (the cookbook signs again when one is about to expire).
URL_SECONDS = 3600
# Where the files are served, outside the key gate: the signature is the key.
FILES_PREFIX = SIGNED_DOWNLOADS


def _signature(row: TinkerCheckpoint, name: str, expires: int) -> str:
    assert row.download_secret is not None
    message = f"{row.id}/{name}/{expires}".encode()
    return hmac.new(bytes.fromhex(row.download_secret), message, hashlib.sha256).hexdigest()


def signed_urls(session: Session, store: BlobStore, project: Project, run_id: str,
                checkpoint_id: str, root_url: str) -> ExternalWeightsUrls:
    """Each file of the project's external weights `tinker://{run}/{checkpoint_id}`, signed
    for URL_SECONDS."""
    path = f"tinker://{run_id}/{checkpoint_id}"
    row = session.scalar(select(TinkerCheckpoint).where(
        TinkerCheckpoint.path == path, TinkerCheckpoint.project_id == project.id,
        TinkerCheckpoint.kind == "external"))
    if row is None or (row.expires_at is not None and row.expires_at <= time.time()):
        raise APIError(404, f"No external weights '{checkpoint_id}' in run '{run_id}' "
                       "(save_weights_external makes them).", param="checkpoint_id",
                       code="checkpoint_not_found")
    expires = int(time.time()) + URL_SECONDS
    urls = {}
    for key in store.list_keys(row.blob_prefix):
        name = key[len(row.blob_prefix):]
        query = urlencode({"expires": expires, "signature": _signature(row, name, expires)})
        urls[name] = f"{root_url}{FILES_PREFIX}{quote(row.id)}/{quote(name)}?{query}"
    return ExternalWeightsUrls(urls=urls, expires=datetime.fromtimestamp(expires, UTC))


def signed_file(session: Session, store: BlobStore, checkpoint: str, name: str, expires: int,
                signature: str) -> Iterator[bytes]:
    """The file a signed URL names, read from the blob store; a 403 for a URL that is not
    one this server signed, or has expired, or whose checkpoint is gone."""
    row = session.scalar(select(TinkerCheckpoint).where(TinkerCheckpoint.id == checkpoint,
                                                        TinkerCheckpoint.kind == "external"))
    if (row is None or expires < time.time()
            or not hmac.compare_digest(_signature(row, name, expires), signature)):
        raise APIError(403, "This download URL is not valid, or has expired; ask "
                       "get_external_weights_urls for new ones.", param="signature",
                       code="invalid_signature")
    key = row.blob_prefix + name
    if not store.exists(key):
        raise APIError(404, f"No file '{name}' in these weights.", param="name",
                       code="file_not_found")
    return store.read(key)
