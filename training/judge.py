"""The judge of a reinforcement job's score_model graders, seen from its worker: the API's own
`/v1/chat/completions`, asked with a key of the job's project that the worker mints for
itself. So a judge is any model the project may chat with (a served base, its own or a
shared fine-tuned model), through the same leases, routing and rate limits as its other
requests, wherever the worker runs. The key is the job's (it shows in `tuneserve keys list`
with the job's id), revoked when the worker stops and, at the latest, when the job ends."""

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Iterator
from typing import Any

import httpx

from storage import api_keys
from storage.db import Database
from training import jobs
from training.graders import (
    AnyGrader,
    Judge,
    JudgeError,
    JudgeRejected,
    JudgeReply,
    ScoreModelSamplingParams,
    judge_reply,
    judge_request,
    needs_judge,
)

log = logging.getLogger("tuneserve.worker")

# Answers worth asking again (the API or its engine is busy, restarting, or rate-limits the
# project); the grader's timeout bounds the retries.
_RETRIED = {429, 502, 503, 504}
_MAX_BACKOFF = 10.0


class JudgeUnreachable(Exception):
    """This worker has no API node to ask (`TUNESERVE_API_URL` is not set on its node): the
    job fails, telling the tenant `tenant_message`."""

    tenant_message = ("The training node cannot reach the model server that judges the "
                      "score_model grader; the operator's logs say why.")


class JobTakenOver(Exception):
    """This worker's attempt no longer holds the job (the scheduler gave it to another after
    this one stopped beating): it must touch nothing of the job's, its keys included."""


class JudgeKeyRevoked(JudgeUnreachable):
    """The API refused the job's own key: someone revoked it (`tuneserve keys revoke`), so no
    answer of this run can be judged any more."""

    tenant_message = ("The job's API key, which its score_model grader is asked with, was "
                      "revoked: its answers can no longer be judged.")


# Refusals no later request of the run can escape: the grader names a model that is gone or
# not served, or a token budget the API never allows. Any other 4xx (an answer too long for
# the judge's context, say) fails that one sample's grading only.
_FATAL_CODES = {"model_not_found", "model_not_served"}


def http_judge(api_url: str, secret: str) -> Judge:
    """A Judge that asks the API at `api_url` with the key `secret`, its connections pooled
    on the event loop it runs in (TRL's, for the whole run)."""
    pooled: list[tuple[asyncio.AbstractEventLoop, httpx.AsyncClient]] = []

    def client() -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if not pooled or pooled[0][0] is not loop:
            pooled[:] = [(loop, httpx.AsyncClient(
                base_url=api_url, headers={"authorization": f"Bearer {secret}"},
                timeout=httpx.Timeout(None, connect=10.0)))]
        return pooled[0][1]

    async def judge(model: str, messages: list[dict[str, str]],
                    sampling: ScoreModelSamplingParams | None) -> JudgeReply:
        payload = {**judge_request(messages, sampling), "model": model}
        delay = 0.5
        while True:
            try:
                response = await client().post("/v1/chat/completions", json=payload)
            except httpx.TransportError as exc:
                # The API node restarting: asked again until the grader's timeout.
                log.warning("judge request to %s failed (%s); retrying", api_url, exc)
            else:
                body = _json(response)
                if response.status_code not in _RETRIED or _serves_nothing(body):
                    return _reply(response.status_code, body)
                retry_after = response.headers.get("retry-after", "")
                if retry_after.isdigit():
                    delay = max(delay, float(retry_after))
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 2, _MAX_BACKOFF)

    return judge


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _error(body: Any) -> dict[str, Any]:
    """The OpenAI error object of an answer's body ({} where there is none)."""
    error = body.get("error") if isinstance(body, dict) else None
    return error if isinstance(error, dict) else {}


def _serves_nothing(body: Any) -> bool:
    """A 503 from an API node with serving turned off: asking again will not help."""
    return _error(body).get("code") == "serving_disabled"


def _reply(status: int, body: Any) -> JudgeReply:
    error = _error(body)
    if status == 401:
        raise JudgeKeyRevoked
    if status == 404 or (400 <= status < 500 and error.get("code") in _FATAL_CODES):
        # The grader's mistake: the job fails naming the field, as the graders' run route
        # answers a 400.
        raise JudgeRejected("model", str(error.get("message") or "The judge refused the "
                                         "request."), str(error.get("code") or "model_not_found"))
    # The API's token budget ("n": no max_tokens given, so the whole context is assumed):
    # the grader's max_completions_tokens, for every answer alike.
    if (status == 400 and error.get("param") in ("max_tokens", "n")
            and error.get("code") != "context_length_exceeded"):
        raise JudgeRejected("sampling_params.max_completions_tokens",
                            str(error.get("message") or "The judge refused the token budget."),
                            str(error.get("code") or "invalid_value"))
    if status != 200:
        detail = f": {error['code']}" if isinstance(error.get("code"), str) else ""
        raise JudgeError(f"The API answered {status}{detail}.")
    return judge_reply(200, body)


def _check_reachable(api_url: str, secret: str, timeout: float) -> None:
    """Asks the API node for the project's models before training starts, so a wrong
    `TUNESERVE_API_URL` (or an API on another DB, which does not know the key) fails the job
    at once rather than every judged answer after its timeout. A node restarting or busy
    is asked again until `timeout`."""
    deadline, delay = time.monotonic() + timeout, 0.5
    with httpx.Client(base_url=api_url, headers={"authorization": f"Bearer {secret}"},
                      timeout=10.0) as http:
        while True:
            try:
                status = http.get("/v1/models").status_code
            except httpx.HTTPError as exc:
                why = f"{type(exc).__name__}: {exc}"
            else:
                if status == 200:
                    return
                why = f"it answered {status}"
                if status not in _RETRIED:
                    break
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, _MAX_BACKOFF)
    raise JudgeUnreachable(f"the API node at {api_url} does not answer the judge's key: {why}")


@contextlib.contextmanager
def job_judge(db: Database, api_url: str, project_id: str, job_id: str, attempt: int,
              grader: AnyGrader | None, timeout: float = 120.0) -> Iterator[Judge | None]:
    """The judge of the job's grader while the block runs (None: the grader asks no
    model), once the API node answers its key (`timeout`: how long it may take to). Keys
    left by the job's earlier attempts are revoked first: their workers are superseded.
    Raises JobTakenOver, revoking nothing, if `attempt` is itself superseded (a worker cut
    off from the DB for longer than the heartbeat timeout would revoke the live attempt's
    key and fail its job grader_unavailable)."""
    if grader is None or not needs_judge(grader):
        yield None
        return
    if not api_url:
        raise JudgeUnreachable("score_model graders need TUNESERVE_API_URL on the worker's "
                               "node: the address of an API node")
    with db.session() as s:
        # Fenced: on PostgreSQL the job's row stays locked until the keys are written.
        if not jobs.holds(s, job_id, attempt):
            raise JobTakenOver(job_id)
        api_keys.revoke_job_keys(s, job_id)
        secret = api_keys.add_api_key(s, project_id, job_id=job_id)
        key_hash = api_keys.hash_key(secret)
    try:
        _check_reachable(api_url, secret, timeout)
        yield http_judge(api_url, secret)
    finally:
        try:
            with db.session() as s:
                api_keys.revoke_hashed(s, key_hash)
        except Exception:
            # The job's end revokes it all the same (training/jobs.py).
            log.exception("could not revoke the job's judge key now")
