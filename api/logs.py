"""The server's log lines: each names the request it was written for (`-` outside one), as
text or, with `TUNESERVE_LOG_FORMAT=json`, one JSON object a line for a log pipeline."""

import json
import logging
import warnings
from typing import Literal

from api.request_context import request_id

_TEXT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"

# Libraries that log at INFO what only their own developers need: the engine's health checks
# and every proxied chat (httpx), the start-up chatter of boto, Ray's client, alembic and
# uvicorn (tuneserve says itself where it listens).
_CHATTY = ("httpx", "httpcore", "botocore", "boto3", "urllib3", "ray", "alembic",
           "uvicorn", "uvicorn.error", "uvicorn.access", "multipart")


class _RequestIdFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id.get()
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname,
                "logger": record.name, "request_id": getattr(record, "request_id", "-"),
                "message": record.getMessage()}
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line)


def configure_logging(fmt: Literal["text", "json"]) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(_RequestIdFilter())
    handler.setFormatter(JsonFormatter() if fmt == "json" else logging.Formatter(_TEXT))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    for name in _CHATTY:
        logging.getLogger(name).setLevel(logging.WARNING)
    # Third-party deprecation and future warnings are for their developers, not operators.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.captureWarnings(True)
