"""A tenant sends `/v1/fine_tuning/alpha/graders/run` a small grader whose template repeats a
large value of its item ("{{item.a}}" thousands of times): rendered, it would take gigabytes
of the API node's memory (the node that also schedules jobs and hosts the local engine). A
grading renders at most `MAX_RENDERED_CHARS`, counted before the text is built: past it the
request is a 400 naming the template's field and the node's memory stays where it was.
Reinforcement fine-tuning's rewards, on the same engine, flag such a sample instead."""

import asyncio
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from tests.support.in_process import InProcessControlPlane
from training import graders
from training.rewards import ERROR_RATE_METRIC, reward_functions

MiB = 1 << 20
# What the node's memory may grow by while it answers the attack.
MEMORY_GROWTH = 200 * MiB
# "{{item.a}}" this many times over 300,000 characters renders 1.5 GB: far past the growth
# allowed, without taking down the machine the suite runs on where a fix is missing (the
# review's 70,000 times, 20 GiB, would).
LARGE_VALUE = "x" * 300_000
REPEATS = 5_000


def _peak_growth(pid: int, action: Callable[[], Any]) -> tuple[int, Any]:
    """How far the process's resident memory rose, at its peak, above where it was before
    `action` (whose result comes back too). Linux: the high-water mark is reset first."""
    process = psutil.Process(pid)
    Path(f"/proc/{pid}/clear_refs").write_text("5")
    before = process.memory_info().rss
    result = action()
    status = Path(f"/proc/{pid}/status").read_text()
    peak = int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) * 1024  # type: ignore[union-attr]
    return peak - before, result


def _check(input: str, reference: str = "x", name: str = "check") -> dict[str, Any]:
    return {"type": "string_check", "name": name, "input": input, "reference": reference,
            "operation": "eq"}


AMPLIFIED = "{{item.a}}" * REPEATS


@pytest.mark.parametrize(("grader", "param"), [
    (_check(AMPLIFIED), "grader.input"),
    (_check("{{item.a}}", reference=AMPLIFIED), "grader.reference"),
    ({"type": "multi", "name": "both", "calculate_output": "fine + loud", "graders": {
        "fine": _check("{{item.a}}"), "loud": _check("{{sample.output_text}}", AMPLIFIED)}},
     "grader.graders.loud.reference"),
    ({"type": "text_similarity", "name": "s", "input": AMPLIFIED, "reference": "x",
      "evaluation_metric": "bleu"}, "grader.input"),
    ({"type": "score_model", "name": "j", "model": "any", "input": [
        {"role": "system", "content": "Grade it."},
        {"role": "user", "content": ["Answer: {{sample.output_text}}", AMPLIFIED]}]},
     "grader.input[1].content"),
])
def test_an_amplifying_template_is_a_400_naming_it_and_the_node_keeps_its_memory(
        control_plane: InProcessControlPlane, grader: dict[str, Any], param: str) -> None:
    body = {"grader": grader, "model_sample": "x", "item": {"a": LARGE_VALUE}}
    with control_plane.http() as http:
        growth, answer = _peak_growth(
            control_plane.pid, lambda: http.post("/fine_tuning/alpha/graders/run", json=body))
        health = http.get(control_plane.root_url + "/health", timeout=10)
    assert growth < MEMORY_GROWTH, f"the node grew by {growth / MiB:.0f} MiB"
    assert answer.status_code == 400, answer.text[:500]
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == (param, "template_too_large")
    assert health.status_code == 200


def test_a_large_grading_under_the_cap_is_answered(
        control_plane: InProcessControlPlane) -> None:
    # A sample and an answer of 450,000 characters each, graded thrice by a multi grader:
    # 2.7 M characters rendered, under the cap, in a request under the 1 MiB body cap.
    answer = "the answer " * 40_000 + "x" * 10_000
    assert 6 * len(answer) < graders.MAX_RENDERED_CHARS
    checks = {name: _check("{{sample.output_text}}", "{{item.answer}}", name)
              for name in ("a", "b", "c")}
    body = {"grader": {"type": "multi", "name": "m", "graders": checks,
                       "calculate_output": "(a + b + c) / 3"},
            "model_sample": answer, "item": {"answer": answer}}
    with control_plane.http() as http:
        run = http.post("/fine_tuning/alpha/graders/run", json=body)
    assert run.status_code == 200, run.text[:500]
    assert run.json()["reward"] == 1.0
    assert run.json()["sub_rewards"] == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_reinforcement_rewards_flag_a_sample_whose_template_renders_too_large() -> None:
    """Training on the same engine: the row's item is too large to render, so that sample
    scores 0 with its `other_error` flag raised, and the job goes on."""
    [reward], _ = reward_functions(_check(AMPLIFIED, "{{item.a}}"), None, 1.0)
    logged: dict[str, float] = {}
    items = [json.dumps({"a": LARGE_VALUE}), json.dumps({"a": "ok"})]
    rewards = asyncio.run(reward(["p", "p"], ["x", "y"], item_json=items,
                                 log_metric=logged.__setitem__))
    assert rewards == [0.0, 0.0]
    assert logged == {ERROR_RATE_METRIC: 0.5}
