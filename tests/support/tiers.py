"""The suite's tiers: what a test starts, as a mark. `make test-fast` runs the tests that start
nothing heavy (no `tuneserve serve`, no training worker, no Ray cluster, no browser), and in that
run each heavy part refuses to start, so a test that starts one unmarked fails there at once
instead of slowing the fast tier down. A control plane in the test's own process
(tests/support/in_process.py) is no heavy part: its tests are in the fast tier."""

import os

import pytest

MARKS = {
    "server": "starts `tuneserve serve` processes (and maybe their vLLM)",
    "training": "trains a model (a training worker process)",
    "cluster": "starts a Ray cluster on loopback",
    "browser": "drives headless Chromium",
}
# The shared fixtures that start heavy parts; a module that starts its own says so with
# `pytestmark`.
FIXTURE_MARKS = {
    "local_server": ("server",), "s3_server": ("server",), "server": ("server",),
    "sft_job": ("server", "training"), "tool_job": ("server", "training"),
    "ray_cluster": ("cluster",), "ray_servers": ("cluster", "server"),
}
# Set by `make test-fast`.
FAST_TIER = "TUNESERVE_TEST_FAST"


def mark_by_fixtures(items: list[pytest.Item]) -> None:
    for item in items:
        for fixture in getattr(item, "fixturenames", ()):
            for mark in FIXTURE_MARKS.get(fixture, ()):
                item.add_marker(mark)


def refuse_in_fast_tier(part: str, mark: str) -> None:
    if os.environ.get(FAST_TIER):
        raise RuntimeError(f"the fast tier starts no {part}: mark the test `{mark}` "
                           "(or its module, with pytestmark)")
