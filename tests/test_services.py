"""The API process's parts start in the order they depend on each other and stop in reverse,
and a part that fails to stop does not keep the others running."""

import asyncio
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from api.services import Parts, Stop, start_services
from api.settings import Settings


def _settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", serving_enabled=False)


def test_the_parts_start_in_order_and_stop_in_reverse(tmp_path: Path) -> None:
    async def run() -> None:
        services = await start_services(_settings(tmp_path))
        assert services.parts.names == ["database", "key listener", "reaper", "scheduler",
                                        "tinker trainers", "tinker answer watch",
                                        "webhook dispatcher"]
        assert services.serving is None
        await services.stop()
        assert services.parts.names == []
        assert not services.scheduler._thread.is_alive()

    asyncio.run(run())


class _RecordingParts(Parts):
    """Parts that note each one's name as it stops."""

    def __init__(self) -> None:
        super().__init__()
        self.stopped: list[str] = []

    def started(self, name: str, stop: Stop) -> None:
        async def recorded() -> None:
            self.stopped.append(name)
            await stop()

        super().started(name, recorded)


def test_a_part_that_fails_to_stop_does_not_keep_the_others_running() -> None:
    async def fails() -> None:
        raise RuntimeError("cannot stop")

    async def stops() -> None:
        pass

    parts = _RecordingParts()
    for name, stop in (("first", stops), ("second", fails), ("third", stops)):
        parts.started(name, stop)
    asyncio.run(parts.stop())
    assert parts.stopped == ["third", "second", "first"]


def test_a_start_that_fails_stops_the_parts_already_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    made: list[_RecordingParts] = []

    def parts() -> _RecordingParts:
        made.append(_RecordingParts())
        return made[-1]

    def no_dispatcher(*_: object) -> None:
        raise RuntimeError("no dispatcher")

    monkeypatch.setattr("api.services.Parts", parts)
    monkeypatch.setattr("api.services.WebhookDispatcher", no_dispatcher)
    with pytest.raises(RuntimeError, match="no dispatcher"):
        asyncio.run(start_services(_settings(tmp_path)))
    assert made[0].stopped == ["tinker answer watch", "tinker trainers", "scheduler", "reaper",
                               "key listener", "database"]


def test_the_app_answers_with_its_services_and_without_an_engine(tmp_path: Path) -> None:
    with TestClient(create_app(_settings(tmp_path))) as client:
        assert client.get("/health").json() == {"status": "ok", "engine": "off"}
        ready = client.get("/ready")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"] == {"database": "ok", "storage": "ok", "engine": "off"}
        assert client.get("/v1/models").status_code == 401
        assert b"tuneserve_fine_tuning_jobs" in client.get("/metrics").content
