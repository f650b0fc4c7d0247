"""All of the API's settings, from `TUNESERVE_*` environment variables."""

from serving.settings import ServingSettings
from training.settings import TrainingSettings

MiB = 1 << 20


class Settings(TrainingSettings, ServingSettings):
    host: str = "127.0.0.1"
    port: int = 8000
    # Creates the default project with this key when the key store is empty.
    bootstrap_api_key: str | None = None
    default_project: str = "default"
    max_file_bytes: int = 512 * MiB
    max_upload_bytes: int = 8 * 1024 * MiB
    # The openai client's `upload_file_chunked` sends 64 MiB parts.
    max_part_bytes: int = 64 * MiB
    upload_ttl_seconds: int = 3600
    # How often expired files and uploads are swept away.
    reaper_interval_seconds: float = 60.0
