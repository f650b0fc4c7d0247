"""Where data lives. Shared by the API and by training workers on other nodes."""

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from storage.db import Database


class StorageSettings(BaseSettings):
    """Blob store and metadata DB location; env vars prefixed `TUNESERVE_`."""

    model_config = SettingsConfigDict(env_prefix="TUNESERVE_", extra="ignore")

    data_dir: Path = Field(
        Path("./data"),
        description=(
            "Where this node keeps its SQLite metadata, its local blobs and the first API key "
            "(`api_key`), with its logs and caches."
        ),
    )
    blob_url: str = Field(
        "",
        description=(
            "`s3://bucket/prefix` switches the blob store to S3; empty means `{data_dir}/blobs`."
        ),
    )
    s3_endpoint: str | None = Field(
        None,
        description=(
            "Any S3-compatible endpoint (MinIO, SeaweedFS); unset means AWS. Credentials come from "
            "the standard `AWS_*` variables."
        ),
    )
    s3_region: str = Field("us-east-1", description="Region for the S3 client.")
    database_url: str = Field(
        "",
        description=(
            "Empty means a SQLite file under the data dir; e.g. "
            "`postgresql+psycopg://user@host/db` for many nodes."
        ),
    )
    models_dir: Path | None = Field(
        None,
        description="Where prepared base models live; empty means `{data_dir}/models`.",
    )
    base_models: str = Field(
        "",
        description=(
            "JSON list of extra base models: `[{\"name\", \"path\", \"context_length\"?, "
            "\"tool_parser\"?}]` (`tool_parser`: vLLM's parser for the tool calls its chat "
            "template makes it write; a name may hold `:`, as Ollama's `qwen2.5:7b` does: storage "
            "is named after ids, never after model names)."
        ),
    )
    ray_address: str = Field(
        "",
        description=(
            "The Ray cluster that runs training jobs and serving replicas "
            "(`TUNESERVE_EXECUTOR=ray`, `TUNESERVE_SERVING=ray`; required with either): its head's "
            "dashboard address, e.g. `http://10.0.0.5:8265`."
        ),
    )
    # Nothing waits on storage forever: a black-holed endpoint would hold a thread for minutes.
    s3_connect_timeout: float = Field(
        5.0,
        description=(
            "Seconds to connect to S3, per try (boto retries 5 times): a black-holed endpoint "
            "fails a call in seconds, not minutes."
        ),
    )
    s3_read_timeout: float = Field(
        60.0,
        description="Seconds to wait for an S3 answer, per try (boto retries 5 times).",
    )
    db_connect_timeout: int = Field(5, description="PostgreSQL: seconds to connect.")
    db_statement_timeout: float = Field(
        60.0,
        description=(
            "PostgreSQL: seconds one statement may run before it is cancelled (the start-up lock "
            "waits without limit)."
        ),
    )
    db_pool_timeout: float = Field(
        10.0,
        description="Seconds to wait for a pooled database connection.",
    )

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
