"""What a crash or a long life leaves behind goes away: the work dirs of a job's killed
attempts, engine logs past their size, logs nothing wrote to for the retention time, and
ended rate-limit windows."""

import os
import time
from pathlib import Path

from api.quotas import count, forget_old_windows
from storage.db import Database
from storage.logs import remove_old, rotate
from training.worker import remove_stale_workdirs, workdir_prefix


def test_a_new_attempt_removes_the_work_dirs_its_killed_predecessors_left(
        tmp_path: Path) -> None:
    dirs = {name: tmp_path / (name + "x1") for name in (
        workdir_prefix("ftjob-ab", 1), workdir_prefix("ftjob-ab", 2),
        workdir_prefix("ftjob-ab", 3), workdir_prefix("ftjob-abc", 1))}
    for path in dirs.values():
        (path / "out").mkdir(parents=True)
        (path / "out" / "adapter.safetensors").write_bytes(b"w" * 1000)
    removed = remove_stale_workdirs("ftjob-ab", 3, tmp_path)
    assert sorted(p.name for p in removed) == sorted(
        p.name for n, p in dirs.items() if n.endswith(("-a1-", "-a2-")) and "abc" not in n)
    left = sorted(p.name for p in tmp_path.iterdir())
    # Its own attempt's and another job's (whose name starts the same) are kept.
    assert left == sorted([workdir_prefix("ftjob-ab", 3) + "x1",
                           workdir_prefix("ftjob-abc", 1) + "x1"])


def test_logs_rotate_past_their_size_and_age_out(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    for generation in range(5):
        log.write_bytes(str(generation).encode() * 100)
        rotate(log, max_bytes=50, keep=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["vllm.log.1", "vllm.log.2",
                                                          "vllm.log.3"]
    assert (tmp_path / "vllm.log.1").read_bytes()[:1] == b"4"  # the newest
    log.write_bytes(b"small")
    rotate(log, max_bytes=50)
    assert log.read_bytes() == b"small"  # under the size: left alone
    old = time.time() - 30 * 86400
    os.utime(tmp_path / "vllm.log.3", (old, old))
    assert remove_old(tmp_path, older_than_seconds=14 * 86400) == 1
    assert not (tmp_path / "vllm.log.3").exists() and log.exists()


def test_ended_rate_limit_windows_are_dropped(database: Database) -> None:
    now = time.time()
    window = int(now // 60)
    with database.session() as s:
        assert count(s, "proj-a", window - 2, 10, 5, 100) == (True, 1, 10)
        assert count(s, "proj-a", window, 10, 5, 100) == (True, 1, 10)
        assert count(s, "proj-a", window, 95, 5, 100) == (False, 1, 10)
        assert forget_old_windows(s, now) == 1
    with database.session() as s:
        assert count(s, "proj-a", window, 10, 5, 100) == (True, 2, 20)
