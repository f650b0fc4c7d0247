"""A tenant sends `/v1/fine_tuning/alpha/graders/run` a grader that costs the API node minutes
of CPU for a few kilobytes: a template the old variable pattern backtracked on cubically
("{{" then thousands of spaces, on the event loop), or a fuzzy_match of two long texts
(quadratic). Templates are now scanned in linear time, and the quadratic metrics take texts
of a bounded size: past it the request is a 400 naming the field, answered at once."""

import subprocess
import sys
import time
from typing import Any

import httpx
import pytest

from tests.support.in_process import InProcessControlPlane
from tests.support.server import ROOT

# Each answer comes in this long; before, each took the node from tens of seconds to hours.
ANSWERED_WITHIN_SECONDS = 5.0


def _run(server: InProcessControlPlane, grader: dict[str, Any], sample: str = "x",
         item: dict[str, Any] | None = None) -> httpx.Response:
    with server.http() as http:
        started = time.monotonic()
        answer = http.post("/fine_tuning/alpha/graders/run", timeout=ANSWERED_WITHIN_SECONDS * 4,
                           json={"grader": grader, "model_sample": sample, "item": item or {}})
        assert time.monotonic() - started < ANSWERED_WITHIN_SECONDS
        assert http.get(server.root_url + "/health", timeout=10).status_code == 200
    return answer


def test_a_template_that_made_the_pattern_backtrack_is_graded_at_once(
        control_plane: InProcessControlPlane) -> None:
    # 4,000 spaces took the old pattern about 50 s on this suite's machines.
    template = "{{" + " " * 4_000 + "x"
    grader = {"type": "string_check", "name": "c", "input": template, "reference": template,
              "operation": "eq"}
    answer = _run(control_plane, grader)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.json()["reward"] == 1.0


# Templates the old pattern took from minutes to hours on: each graded in a second at most.
PATHOLOGICAL = [
    '"{{" + " " * 1_000_000',
    '"{{" * 500_000',
    '"{{" * 500_000 + "}}"',
    '"{{a\\n" * 250_000 + "}}"',
    '"{{ \\n" * 250_000 + "x}}"',
    '"{{" + "\\n" * 1_000_000 + "}}"',
]
# A child process grades them (a pattern holding the interpreter cannot be stopped from
# another thread): the time of each, one a line.
_GRADE_EACH = """
import asyncio, time
from training.graders import parse_grader, run_grader
for template in [{templates}]:
    grader = parse_grader({{"type": "string_check", "name": "c", "input": template,
                           "reference": "x", "operation": "eq"}})
    started = time.monotonic()
    asyncio.run(run_grader(grader, "x", {{"a": "y"}}))
    print(time.monotonic() - started, flush=True)
"""


def test_templates_are_graded_in_linear_time() -> None:
    code = _GRADE_EACH.format(templates=", ".join(PATHOLOGICAL))
    try:
        done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                              text=True, timeout=60)
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"grading took over a minute; done: {exc.stdout!r}")
    assert done.returncode == 0, done.stderr[-2000:]
    seconds = [float(line) for line in done.stdout.split()]
    assert len(seconds) == len(PATHOLOGICAL) and max(seconds) < 1.0, seconds


def test_a_fuzzy_match_of_long_texts_is_a_400_naming_the_longer(
        control_plane: InProcessControlPlane) -> None:
    sample = "abcdefghij" * 45_000  # 450,000 characters: quadratic work of about 10 s
    grader = {"type": "text_similarity", "name": "s", "input": "{{sample.output_text}}",
              "reference": "{{item.answer}}", "evaluation_metric": "fuzzy_match"}
    answer = _run(control_plane, grader, sample, {"answer": sample[:-1]})
    assert answer.status_code == 400, answer.text[:500]
    error = answer.json()["error"]
    assert (error["param"], error["code"]) == ("grader.input", "text_too_long")
    # Short enough, the same grader is answered.
    fine = _run(control_plane, grader, sample[:50_000], {"answer": sample[:50_000]})
    assert fine.status_code == 200 and fine.json()["reward"] == 1.0
