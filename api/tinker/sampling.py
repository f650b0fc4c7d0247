"""`asample` requests, done on this API node: the sampler's model (a served base, or sampler
weights hot-loaded as an adapter through the same leases and routing as chat) is asked
through vLLM's completions route with the prompt's token ids, and the answer is written to
the request's future as the SDK's SampleResponse protobuf."""

import logging
import math
from typing import Any

import anyio

from api.services import Services
from api.tinker.schemas import SampleRequest
from serving.proxy import Answer
from serving.send import SERVING_ERRORS, send
from storage.models import TinkerSampler
from training.tinker import futures
from training.tinker.futures import FutureStatus
from training.tinker.wire import SampledSequence, encode_sample

log = logging.getLogger("tuneserve.tinker")

# vLLM names a token by id in its logprobs when asked (`return_tokens_as_token_ids`).
_TOKEN_ID = "token_id:"


class SampleError(Exception):
    """The tenant's request cannot be sampled; the text is their error."""


def completion_request(body: SampleRequest) -> dict[str, Any]:
    """vLLM's /v1/completions body for the sample: token ids in, token ids and each one's
    log-probability out."""
    params = body.sampling_params
    prompt = [t for chunk in body.prompt.chunks for t in chunk.tokens]
    # Greedy samples are all the same sequence, and vLLM takes n = 1 for them: asked once,
    # repeated (`run_sample`).
    n = 1 if params.temperature == 0 else body.num_samples
    payload: dict[str, Any] = {
        "prompt": prompt, "n": n, "max_tokens": params.max_tokens,
        "temperature": params.temperature, "top_p": params.top_p, "top_k": params.top_k,
        "seed": params.seed, "logprobs": 0, "return_tokens_as_token_ids": True,
        "skip_special_tokens": False}
    stop = params.stop
    if stop == []:
        payload["ignore_eos"] = True  # the SDK's "do not stop, not even at EOS"
    elif isinstance(stop, str):
        payload["stop"] = [stop]
    elif stop and isinstance(stop[0], int):
        payload["stop_token_ids"] = stop
    elif stop:
        payload["stop"] = stop
    if body.prompt_logprobs:
        payload["prompt_logprobs"] = 0
    return payload


def read_answer(answer: Answer, prompt: list[int],
                with_prompt_logprobs: bool) -> tuple[list[SampledSequence], list[float] | None]:
    if answer.status == 400:
        message = (answer.body.get("error") or {}).get("message") or answer.body.get("message")
        raise SampleError(f"The model refused the sample: {message}")
    if answer.status != 200:
        raise RuntimeError(f"the engine answered {answer.status}")
    choices = sorted(answer.body["choices"], key=lambda c: c["index"])
    sequences = []
    for choice in choices:
        logprobs = choice.get("logprobs") or {}
        tokens = [int(t.removeprefix(_TOKEN_ID)) for t in logprobs.get("tokens") or []]
        values = [v if v is not None else -math.inf
                  for v in logprobs.get("token_logprobs") or []]
        sequences.append(SampledSequence(tokens=tokens, logprobs=values,
                                         stopped=choice.get("finish_reason") != "length"))
    prompt_logprobs = None
    if with_prompt_logprobs:
        # One entry per prompt token (None for the first), keyed by token id.
        entries = choices[0].get("prompt_logprobs") or [None] * len(prompt)
        prompt_logprobs = [math.nan if entry is None
                           else float(entry[str(token)]["logprob"])
                           for token, entry in zip(prompt, entries, strict=False)]
    return sequences, prompt_logprobs


async def run_sample(services: Services, future_id: str, sampler: TinkerSampler,
                     body: SampleRequest) -> None:
    """Samples and writes the answer to the future (never raises: a failure is the
    future's answer)."""
    result: dict[str, Any] | None = None
    proto: bytes | None = None
    status = FutureStatus.SUCCEEDED
    serving = services.serving
    try:
        if serving is None:
            raise SampleError("This server does not serve models (serving is turned off).")
        payload = completion_request(body)
        answer, lease = await send(serving.adapters, serving.proxy, sampler.project_id,
                                   sampler.model_path or sampler.base_model,
                                   "/v1/completions", payload, stream=False)
        lease.release()
        assert isinstance(answer, Answer)  # not streamed
        sequences, prompt_logprobs = read_answer(answer, payload["prompt"],
                                                 bool(body.prompt_logprobs))
        sequences = (sequences * body.num_samples)[:body.num_samples]
        proto = encode_sample(sequences, prompt_logprobs)
    except SampleError as exc:
        result = futures.user_error(str(exc))
    except SERVING_ERRORS as exc:
        log.warning("sample %s: %s", future_id, exc)
        result, status = futures.server_error("The model is not available to sample now."), \
            FutureStatus.FAILED
    except Exception:
        log.exception("sample %s failed", future_id)
        result, status = futures.server_error("The sample failed with an internal error."), \
            FutureStatus.FAILED

    def write() -> None:
        with services.db.session() as s:
            futures.finish(s, future_id, status, result=result, result_proto=proto)

    await anyio.to_thread.run_sync(write)
