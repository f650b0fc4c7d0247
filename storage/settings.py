"""Where data lives. Shared by the API and by training workers on other nodes."""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from storage.db import Database


class StorageSettings(BaseSettings):
    """Blob store and metadata DB location; env vars prefixed `TUNESERVE_`."""

    model_config = SettingsConfigDict(env_prefix="TUNESERVE_", extra="ignore")

    data_dir: Path = Path("./data")
    # `s3://bucket/prefix` switches the blob store to S3; empty means `{data_dir}/blobs`.
    blob_url: str = ""
    s3_endpoint: str | None = None
    s3_region: str = "us-east-1"
    # Empty means a SQLite file under the data dir.
    database_url: str = ""
    # Where prepared base models live; empty means `{data_dir}/models`.
    models_dir: Path | None = None
    # JSON list of extra base models: [{"name", "path", "context_length"?, "tool_parser"?}]
    # (`tool_parser`: vLLM's parser for the tool calls its chat template makes it write).
    base_models: str = ""
    # The Ray cluster that runs training jobs and serving replicas (TUNESERVE_EXECUTOR=ray,
    # TUNESERVE_SERVING=ray): its head's dashboard address, e.g. http://10.0.0.5:8265.
    ray_address: str = ""
    # Nothing waits on storage forever (a black-holed endpoint would hold a thread for
    # minutes): S3 connect and read timeouts (per try; boto retries a few times), PostgreSQL
    # connect timeout and per-statement limit, and the wait for a pooled DB connection.
    s3_connect_timeout: float = 5.0
    s3_read_timeout: float = 60.0
    db_connect_timeout: int = 5
    db_statement_timeout: float = 60.0
    db_pool_timeout: float = 10.0

    def prepare_data_dir(self) -> None:
        """Creates the data dir for this user alone, and makes what this process writes
        (blobs, the SQLite file, job logs) private too: umask 077 (files 0600, dirs 0700)."""
        os.umask(0o077)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)

    def open_database(self) -> "Database":
        from storage.db import Database

        return Database(self.resolved_database_url, connect_timeout=self.db_connect_timeout,
                        statement_timeout=self.db_statement_timeout,
                        pool_timeout=self.db_pool_timeout)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'tuneserve.db').resolve()}"


def json_object(text: str, name: str) -> dict[str, Any] | None:
    """A setting given as a JSON object (empty: None); `name` is its variable, for errors."""
    if not text:
        return None
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"{name} must be a JSON object")
    return value
