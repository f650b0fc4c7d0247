"""Per-project quotas that hold across API nodes: requests and tokens per minute on the model
routes (429 with OpenAI's rate-limit headers and `retry-after`), and bytes stored."""

import time
from collections.abc import Iterator
from pathlib import Path

import openai
import pytest

from tests.support.in_process import InProcessControlPlane, fresh_database

LIMITS = {"rate_limit_requests_per_minute": 3, "rate_limit_tokens_per_minute": 2000,
          "max_project_stored_bytes": 1000}


@pytest.fixture(scope="module")
def two_nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[InProcessControlPlane, InProcessControlPlane]]:
    """Two API nodes on one PostgreSQL with the same limits (no model engine: admitted
    requests answer 503, and still count), in this process."""
    a_dir, b_dir = tmp_path_factory.mktemp("quota-a"), tmp_path_factory.mktemp("quota-b")
    with (fresh_database(request, "postgresql", a_dir) as url,
          InProcessControlPlane(a_dir, url, **LIMITS) as a,
          InProcessControlPlane(b_dir, url, api_key=a.api_key, **LIMITS) as b):
        yield a, b


def _chat(server: InProcessControlPlane, max_tokens: int) -> tuple[int, dict[str, str], dict]:  # type: ignore[type-arg]
    with server.http() as http:
        answer = http.post("/chat/completions", json={
            "model": "any", "max_tokens": max_tokens,
            "messages": [{"role": "user", "content": "hello"}]})
    return answer.status_code, dict(answer.headers), answer.json()["error"]


def test_rate_limits_hold_across_api_nodes(
        two_nodes: tuple[InProcessControlPlane, InProcessControlPlane]) -> None:
    a, b = two_nodes
    if time.time() % 60 > 45:  # all in one minute's window
        time.sleep(61 - time.time() % 60)
    status, headers, _ = _chat(a, 1500)
    assert status == 503  # admitted: the (absent) engine answers
    assert (headers["x-ratelimit-limit-requests"], headers["x-ratelimit-remaining-requests"],
            headers["x-ratelimit-limit-tokens"]) == ("3", "2", "2000")
    assert int(headers["x-ratelimit-remaining-tokens"]) < 500
    assert headers["x-ratelimit-reset-requests"].endswith("s")
    # Another 1500 tokens do not fit this minute, on the other node either.
    status, headers, error = _chat(b, 1500)
    assert status == 429 and error["type"] == "tokens", error
    assert error["code"] == "rate_limit_exceeded"
    assert 1 <= int(headers["retry-after"]) <= 60
    assert headers["x-ratelimit-remaining-requests"] == "2"  # a refused request is not counted
    assert _chat(b, 8)[0] == 503
    assert _chat(a, 8)[0] == 503
    status, headers, error = _chat(b, 8)
    assert status == 429 and error["type"] == "requests", error
    assert headers["x-ratelimit-remaining-requests"] == "0"
    with pytest.raises(openai.RateLimitError):
        a.client().chat.completions.create(model="any", max_tokens=8,
                                           messages=[{"role": "user", "content": "hi"}])
    # Other routes are not rate limited.
    assert len(a.client().files.list().data) == 0


def test_stored_bytes_stay_within_the_projects_quota(
        two_nodes: tuple[InProcessControlPlane, InProcessControlPlane], tmp_path: Path) -> None:
    client = two_nodes[0].client()
    kept = client.files.create(file=("a.jsonl", b'{"x": 1}\n' * 60), purpose="fine-tune")
    assert kept.bytes == 540
    with pytest.raises(openai.PermissionDeniedError) as refused:
        client.files.create(file=("b.jsonl", b'{"x": 2}\n' * 60), purpose="fine-tune")
    assert refused.value.code == "storage_quota_exceeded"
    with pytest.raises(openai.PermissionDeniedError):
        client.uploads.create(bytes=600, filename="c.jsonl", mime_type="application/jsonl",
                              purpose="fine-tune")
    assert [f.id for f in client.files.list()] == [kept.id]  # nothing half-stored
    client.files.delete(kept.id)
    assert client.files.create(file=("b.jsonl", b'{"x": 2}\n' * 60),
                               purpose="fine-tune").bytes == 540
