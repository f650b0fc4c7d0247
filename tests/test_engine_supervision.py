"""The engine's supervisor outlives a failing report of its health: a replica whose beat
cannot be written once (a PostgreSQL failover) goes on being watched, and is announced
again at the next passed check. A stand-in process answers `/health` in vLLM's place (the
real engine is started in tests/test_chat.py)."""

import asyncio
import sys
from pathlib import Path

import pytest

from serving.engine import VLLMEngine
from serving.settings import ServingSettings
from storage.base_models import BaseModelSpec


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class StandInEngine(VLLMEngine):
    """Runs a static HTTP server whose only page is `/health`, on the port vLLM would take."""

    def command(self, cuda: bool | None = None) -> list[str]:
        pages = Path(self.settings.data_dir) / "pages"
        pages.mkdir(exist_ok=True)
        (pages / "health").write_text("ok")
        return [sys.executable, "-m", "http.server", "--bind", str(self.host), str(self.port),
                "--directory", str(pages)]


@pytest.mark.anyio
async def test_a_failed_health_report_does_not_end_the_supervision(tmp_path: Path) -> None:
    reports: list[int] = []

    async def report() -> None:
        reports.append(len(reports))
        if len(reports) <= 2:
            raise ConnectionError("the database went away")

    engine = StandInEngine(ServingSettings(data_dir=tmp_path), BaseModelSpec("base", tmp_path),
                           host="127.0.0.1", on_healthy=report)
    await engine.start()
    try:
        for _ in range(100):
            if len(reports) >= 4:
                break
            await asyncio.sleep(0.1)
        # Reported after every passed check, the two failed ones included, and ready.
        assert len(reports) >= 4 and engine.ready.is_set()
        assert engine.restarts == 0
    finally:
        await engine.stop()
