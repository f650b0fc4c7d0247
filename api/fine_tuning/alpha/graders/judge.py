"""score_model graders' judge: a chat request for a model the project may use, through the
same leases, routing and rate limits as its own chat requests.

A grader naming a model the project has no access to (or one this server does not serve) is
the client's mistake: a 400 naming the grader's `model`. The model server failing to answer
is reported in the run's `model_grader_server_error` flag (HTTP 200), as OpenAI reports a
judge's failure; with serving turned off here, every judge fails that way."""

from api import request_context
from api.errors import APIError
from api.inference import check_token_budget
from api.quotas import admit, estimate_tokens
from api.services import Services
from api.settings import Settings
from serving.adapters import AdapterLoadError, AdapterManager, ModelNotFound, ModelNotServed
from serving.engine import EngineTimeout, EngineUnavailable
from serving.proxy import Answer, Proxy
from serving.send import send
from storage.db import Database
from training.graders import (
    Judge,
    JudgeError,
    JudgeRejected,
    JudgeReply,
    ScoreModelSamplingParams,
    judge_reply,
    judge_request,
)

_MAX_TOKENS = "sampling_params.max_completions_tokens"


def engine_judge(services: Services, project_id: str) -> Judge:
    async def judge(model: str, messages: list[dict[str, str]],
                    sampling: ScoreModelSamplingParams | None) -> JudgeReply:
        serving = services.serving
        if serving is None:
            raise JudgeError("Serving is turned off on this server.")
        ask = serving_judge(services.settings, services.db, serving.adapters, serving.proxy,
                            project_id)
        return await ask(model, messages, sampling)

    return judge


def serving_judge(settings: Settings, db: Database, adapters: AdapterManager, proxy: Proxy,
                  project_id: str) -> Judge:
    """The judge of a node that serves (the built-in evaluation's, on the serving parts)."""
    async def judge(model: str, messages: list[dict[str, str]],
                    sampling: ScoreModelSamplingParams | None) -> JudgeReply:
        payload = judge_request(messages, sampling)
        try:
            check_token_budget(1, payload.get("max_tokens"), settings.max_model_len,
                               settings.max_request_tokens)
        except APIError as err:
            raise JudgeRejected(_MAX_TOKENS, err.message, err.code or "invalid_value") from None
        await admit(settings, db, project_id,
                    estimate_tokens(messages, 1, payload.get("max_tokens")))
        try:
            out, lease = await send(adapters, proxy, project_id, model,
                                    "/v1/chat/completions", payload, stream=False,
                                    request_id=request_context.request_id.get())
        except ModelNotFound:
            raise JudgeRejected("model", f"The model '{model}' does not exist or you do not "
                                "have access to it.", "model_not_found") from None
        except ModelNotServed:
            raise JudgeRejected("model", f"The model '{model}' is not served by this server.",
                                "model_not_served") from None
        except EngineUnavailable:
            raise JudgeError("The model server is starting or restarting.") from None
        except EngineTimeout:
            raise JudgeError("The model server did not answer in time.") from None
        except AdapterLoadError:
            raise JudgeError(f"The model '{model}' could not be loaded by the model "
                             "server.") from None
        lease.release()
        assert isinstance(out, Answer)
        return judge_reply(out.status, out.body)

    return judge
