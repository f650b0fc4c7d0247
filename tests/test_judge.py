"""The score_model judge of a reinforcement job's worker (training/judge.py): it asks an API
node over HTTP, asks again while the API is busy, names the grader's field when the API
refuses the request, and its key lives only as long as the worker (or the job) does."""

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from storage.api_keys import list_keys
from storage.db import Database
from storage.ids import new_id
from storage.models import FineTuningJob, Project
from training import jobs
from training.graders import JudgeError, JudgeRejected, parse_grader
from training.judge import JudgeKeyRevoked, JudgeUnreachable, http_judge, job_judge

MESSAGES = [{"role": "user", "content": "Rate: yes"}]
ANSWER = {"choices": [{"message": {"role": "assistant", "content": "1"}}],
          "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
JUDGE = {"type": "score_model", "name": "judge", "model": "m",
         "input": [{"role": "user", "content": "{{sample.output_text}}"}]}


class FakeApi:
    """An API node that answers the queued (status, body) pairs in turn, the last one
    repeatedly, and records what it was asked."""

    def __init__(self, answers: list[tuple[int, dict[str, Any]]]) -> None:
        self.answers, self.asked = answers, []
        self.models_status = 200  # what GET /v1/models answers
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server name
                api.asked.append((self.path, self.headers["authorization"], None))
                data = b'{"object": "list", "data": []}'
                self.send_response(api.models_status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802 - the http.server name
                body = self.rfile.read(int(self.headers["content-length"]))
                api.asked.append((self.path, self.headers["authorization"], json.loads(body)))
                status, answer = api.answers[min(len(api.asked), len(api.answers)) - 1]
                data = json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                if status in (429, 503):
                    self.send_header("retry-after", "0")
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_api(request: pytest.FixtureRequest) -> Iterator[FakeApi]:
    api = FakeApi(request.param)
    yield api
    api.close()


def _ask(api: FakeApi) -> Any:
    return asyncio.run(http_judge(api.url, "sk-job")("m", MESSAGES, None))


@pytest.mark.parametrize("fake_api", [[(503, {}), (429, {}), (200, ANSWER)]], indirect=True)
def test_the_judge_asks_again_while_the_api_is_busy(fake_api: FakeApi) -> None:
    reply = _ask(fake_api)
    assert (reply.text, reply.prompt_tokens, reply.completion_tokens) == ("1", 7, 1)
    assert len(fake_api.asked) == 3
    path, auth, body = fake_api.asked[-1]
    assert (path, auth, body) == ("/v1/chat/completions", "Bearer sk-job",
                                  {"messages": MESSAGES, "model": "m"})


def _error(param: str | None, code: str) -> dict[str, Any]:
    return {"error": {"message": "no", "type": "invalid_request_error", "param": param,
                      "code": code}}


@pytest.mark.parametrize("fake_api, field, code", [
    ([(404, _error("model", "model_not_found"))], "model", "model_not_found"),
    ([(400, _error("model", "model_not_served"))], "model", "model_not_served"),
    ([(400, _error("max_tokens", "invalid_value"))],
     "sampling_params.max_completions_tokens", "invalid_value"),
    ([(400, _error("n", "invalid_value"))],  # no max_completions_tokens, a long context
     "sampling_params.max_completions_tokens", "invalid_value"),
], indirect=["fake_api"])
def test_a_judge_refusing_the_grader_s_request_names_its_field(
        fake_api: FakeApi, field: str, code: str) -> None:
    with pytest.raises(JudgeRejected) as info:
        _ask(fake_api)
    assert (info.value.field, info.value.code) == (field, code)


@pytest.mark.parametrize("fake_api", [[(503, _error(None, "serving_disabled"))],
                                      [(500, {})],
                                      # One answer too long for the judge's context: that
                                      # sample's grading fails, the run goes on.
                                      [(400, _error("max_tokens", "context_length_exceeded"))],
                                      [(400, _error("messages", "context_length_exceeded"))]],
                         indirect=True)
def test_a_judge_the_api_does_not_answer_is_a_server_error(fake_api: FakeApi) -> None:
    with pytest.raises(JudgeError):
        _ask(fake_api)
    assert len(fake_api.asked) == 1


@pytest.mark.parametrize("fake_api", [[(401, _error(None, "invalid_api_key"))]], indirect=True)
def test_a_revoked_job_key_stops_the_run(fake_api: FakeApi) -> None:
    # No later sample could be judged: the job fails grader_unavailable, saying why.
    with pytest.raises(JudgeKeyRevoked) as info:
        _ask(fake_api)
    assert "revoked" in info.value.tenant_message and len(fake_api.asked) == 1


def _job(db: Database) -> tuple[str, str]:
    with db.session() as s:
        project_id, job_id = new_id("proj_"), new_id("ftjob-")
        s.add(Project(id=project_id, name="p" + new_id(""), created_at=0))
        s.flush()
        s.add(FineTuningJob(id=job_id, project_id=project_id, status=jobs.JobStatus.RUNNING,
                            model="m", base_model="m", training_file="file-x", seed=1,
                            method={"type": "reinforcement"}, created_at=0,
                            model_name="ft:m:p::abc", result_files=[], attempt=1))
    return project_id, job_id


def _job_keys(db: Database, job_id: str) -> list[bool]:
    """Whether each of the job's keys is revoked, oldest first."""
    with db.session() as s:
        return [key.revoked_at is not None for key, _ in list_keys(s) if key.job_id == job_id]


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi([(200, ANSWER)])
    yield fake
    fake.close()


def test_the_job_s_key_lives_while_the_worker_trains(database: Database, api: FakeApi) -> None:
    project_id, job_id = _job(database)
    grader = parse_grader(JUDGE)
    with job_judge(database, api.url, project_id, job_id, 1, grader) as judge:
        assert judge is not None and _job_keys(database, job_id) == [False]
    assert _job_keys(database, job_id) == [True]
    # A worker that is lost leaves its key; the next attempt's worker revokes it, and the
    # job's end revokes the last.
    context = job_judge(database, api.url, project_id, job_id, 1, grader)
    context.__enter__()
    with job_judge(database, api.url, project_id, job_id, 1, grader):
        assert _job_keys(database, job_id) == [True, True, False]
    with job_judge(database, api.url, project_id, job_id, 1, grader):
        with database.session() as s:
            assert jobs.fail(s, job_id, "x", "lost", attempt=1)
        assert _job_keys(database, job_id) == [True, True, True, True]


def test_only_a_score_model_grader_needs_an_api_node(database: Database) -> None:
    project_id, job_id = _job(database)
    string_check = parse_grader({"type": "string_check", "name": "s", "operation": "eq",
                                 "input": "{{sample.output_text}}", "reference": "yes"})
    with job_judge(database, "", project_id, job_id, 1, string_check) as judge:
        assert judge is None
    with pytest.raises(JudgeUnreachable), job_judge(database, "", project_id, job_id, 1,
                                                     parse_grader(JUDGE)):
        pass
    assert _job_keys(database, job_id) == []


@pytest.mark.parametrize("status", [None, 404, 401])
def test_an_api_node_that_does_not_answer_the_job_s_key_fails_it_before_training(
        database: Database, api: FakeApi, status: int | None) -> None:
    # None: nothing listens there (a mistyped TUNESERVE_API_URL); 404: something else does;
    # 401: an API node on another DB.
    project_id, job_id = _job(database)
    url = "http://127.0.0.1:9" if status is None else api.url
    api.models_status = status or 200
    with pytest.raises(JudgeUnreachable), job_judge(database, url, project_id, job_id, 1,
                                                     parse_grader(JUDGE), timeout=1):
        pytest.fail("the block must not run")
    assert _job_keys(database, job_id) == [True]  # revoked all the same
