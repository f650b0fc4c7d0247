"""How many replicas the controller wants for a base, from what its replicas report; what a
replica announces of its node's adapter cache."""

import os
from pathlib import Path

import pytest

from serving.ray_replicas import Controller, cached_adapters, replica_name
from serving.settings import ServedModel, ServingSettings

GROUP = ServedModel("base", min_replicas=1, max_replicas=3)


def load(running: int, waiting: int) -> dict[str, int]:
    return {"running": running, "waiting": waiting}


@pytest.fixture
def controller(tmp_path) -> Controller:  # type: ignore[no-untyped-def]
    return Controller(ServingSettings(data_dir=tmp_path, replica_scale_up_waiting=4,
                                      replica_scale_down_idle_seconds=0.2))


def test_a_queue_that_stays_adds_one_replica_at_a_time(controller: Controller) -> None:
    busy = [load(8, 6), load(8, 4)]  # 5 waiting on average
    assert controller.wanted(GROUP, 2, busy) == 2  # one look is not enough (a burst)
    assert controller.wanted(GROUP, 2, busy) == 3
    assert controller.wanted(GROUP, 3, busy + [load(8, 9)]) == 3
    assert controller.wanted(GROUP, 3, busy + [load(8, 9)]) == 3  # already at the max


def test_idle_replicas_go_down_to_the_min_after_the_idle_time(controller: Controller) -> None:
    import time

    idle = [load(0, 0), load(0, 0)]
    assert controller.wanted(GROUP, 2, idle) == 2
    time.sleep(0.25)
    assert controller.wanted(GROUP, 2, idle) == 1
    assert controller.wanted(GROUP, 1, [load(1, 0)]) == 1
    time.sleep(0.25)
    assert controller.wanted(GROUP, 1, [load(0, 0)]) == 1  # never under the min


def test_the_min_is_kept_when_replicas_are_missing_or_silent(controller: Controller) -> None:
    assert controller.wanted(ServedModel("base", 2, 3), 0, []) == 2
    assert controller.wanted(GROUP, 2, [load(-1, -1), load(-1, -1)]) == 2


def test_replica_names_are_safe_actor_names() -> None:
    assert replica_name("org/Llama 3:8b", 2) == "tuneserve-vllm-org-Llama-3-8b-2"


def test_the_controller_job_carries_no_secret_and_its_id_follows_the_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serving.remote import controller_job

    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret")
    monkeypatch.setenv("TUNESERVE_DATABASE_URL", "postgresql+psycopg://u:pw@db/x")
    one = controller_job(ServingSettings(data_dir=tmp_path, served_models='[{"model": "a"}]'))
    same = controller_job(ServingSettings(data_dir=tmp_path, served_models='[{"model": "a"}]'))
    other = controller_job(ServingSettings(
        data_dir=tmp_path, served_models='[{"model": "a", "max_replicas": 2}]'))
    assert one["submission_id"] == same["submission_id"] != other["submission_id"]
    assert "pw" not in str(one) and "secret" not in str(one)
    assert one["entrypoint_num_cpus"] == 0


@pytest.mark.parametrize("groups", ['[{"model": "a", "min_replicas": 0}]',
                                    '[{"model": "a", "min_replicas": 3, "max_replicas": 2}]'])
def test_a_base_needs_at_least_one_replica(tmp_path, groups: str) -> None:  # type: ignore[no-untyped-def]
    # A base scaled to zero would never get its first replica back.
    with pytest.raises(ValueError, match="1 <= min_replicas <= max_replicas"):
        ServingSettings(data_dir=tmp_path, served_models=groups).served_model_groups()


def test_a_replica_announces_its_newest_cached_adapters_and_no_fetch_in_progress(
    tmp_path: Path
) -> None:
    assert cached_adapters(tmp_path / "not-yet") == [] and cached_adapters(None) == []
    for age, name in enumerate(["lora-c", "lora-b", "lora-a", ".fetch-x"]):
        (tmp_path / name).mkdir()
        os.utime(tmp_path / name, (1000 - age, 1000 - age))
    (tmp_path / "stray-file").write_text("")
    assert cached_adapters(tmp_path) == ["lora-c", "lora-b", "lora-a"]
    assert cached_adapters(tmp_path, limit=2) == ["lora-c", "lora-b"]
