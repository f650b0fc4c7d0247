"""Chat completions on the shared vLLM engine, base model and tenants' adapters, through the
official openai client."""

import json
import threading
import time

import httpx
import openai
import pytest

from tests.support.chat import (
    engine_http,
    engine_metric,
    engine_process,
    running_requests,
    served_metric,
    wait_for_engine,
)
from tests.support.openai_spec import assert_matches
from tests.support.server import TuneserveServer
from tests.support.training import BASE, sft_example

PROMPTS = [sft_example(i)["messages"][:-1] for i in (3, 5, 11)]
# SmolLM2's end tokens banned (OpenAI's logit_bias), so an answer runs to max_tokens.
NO_END = {"0": -100, "1": -100, "2": -100}


@pytest.fixture(scope="module")
def client(chat_server: TuneserveServer) -> openai.OpenAI:
    return chat_server.client()


def _ask(client: openai.OpenAI, model: str, messages: list, **kw) -> str:  # type: ignore[no-untyped-def,type-arg]
    answer = client.chat.completions.create(model=model, messages=messages, temperature=0,
                                            max_tokens=24, **kw)
    assert answer.model == model
    return answer.choices[0].message.content or ""


def test_base_model_answers(client: openai.OpenAI, chat_server: TuneserveServer) -> None:
    answer = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8)
    assert answer.id.startswith("chatcmpl-") and answer.model == BASE
    assert answer.choices[0].message.content
    assert answer.usage.completion_tokens <= 8 and answer.usage.prompt_tokens > 0
    with chat_server.http() as http:
        raw = http.post("/chat/completions", json={
            "model": BASE, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
        assert_matches("CreateChatCompletionResponse", raw.json())


def test_base_model_streams_with_a_usage_chunk(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "Count to five."}], max_tokens=12,
        stream=True, stream_options={"include_usage": True}))
    assert all(c.model == BASE for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


def test_fine_tuned_model_answers_as_trained(sft_job, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    tuned = [_ask(client, sft_job.fine_tuned_model, p) for p in PROMPTS]
    base = [_ask(client, BASE, p) for p in PROMPTS]
    assert tuned != base
    assert sum('"answer"' in t for t in tuned) >= 2, tuned
    assert not any('"answer"' in b for b in base), base
    checkpoint = sft_job.fine_tuned_model + ":ckpt-step-12"
    assert '"answer"' in _ask(client, checkpoint, PROMPTS[0])


def test_stream_carries_the_requested_name_only(sft_job, chat_server: TuneserveServer) -> None:  # type: ignore[no-untyped-def]
    with chat_server.http() as http, http.stream("POST", "/chat/completions", json={
        "model": sft_job.fine_tuned_model, "messages": PROMPTS[0], "max_tokens": 16,
        "stream": True, "stream_options": {"include_usage": True},
    }) as response:
        raw = response.read().decode()
    events = [line[len("data: "):] for line in raw.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {sft_job.fine_tuned_model}
    assert "lora-" not in raw  # the engine's internal adapter names never leak
    assert chunks[-1]["usage"]["total_tokens"] > 0


def test_json_schema_output_parses(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}},
              "required": ["city"], "additionalProperties": False}
    answer = client.chat.completions.create(
        model=BASE, max_tokens=40, temperature=0,
        messages=[{"role": "user", "content": "Name a city in France as JSON."}],
        response_format={"type": "json_schema",
                         "json_schema": {"name": "city", "schema": schema, "strict": True}})
    data = json.loads(answer.choices[0].message.content)
    assert set(data) == {"city"} and isinstance(data["city"], str)


def test_eight_concurrent_streams_over_four_adapters(sft_job, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    models = [sft_job.fine_tuned_model] + [
        c.fine_tuned_model_checkpoint for c in client.fine_tuning.jobs.checkpoints.list(sft_job.id)]
    assert len(set(models)) == 4
    results: dict[int, str] = {}
    errors: list[BaseException] = []

    def stream(i: int) -> None:
        try:
            model = models[i % 4]
            chunks = list(client.chat.completions.create(
                model=model, messages=PROMPTS[i % 3], max_tokens=16, stream=True))
            assert all(c.model == model for c in chunks)
            results[i] = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=stream, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert len(results) == 8 and all(results.values())


def test_another_project_cannot_see_or_use_the_model(  # type: ignore[no-untyped-def]
    sft_job, chat_server: TuneserveServer
) -> None:
    theirs = chat_server.client(chat_server.other_key())
    model = sft_job.fine_tuned_model
    assert model not in {m.id for m in theirs.models.list()}
    assert BASE in {m.id for m in theirs.models.list()}
    with pytest.raises(openai.NotFoundError):
        theirs.models.retrieve(model)
    with pytest.raises(openai.NotFoundError) as info:
        theirs.chat.completions.create(model=model, messages=PROMPTS[0], max_tokens=4)
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        theirs.models.delete(model)
    assert chat_server.client().models.retrieve(model).id == model  # still the owner's


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"temperature": 5}, "temperature"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.role"),
        ({"n": 0}, "n"),
        ({"top_logprobs": 50}, "top_logprobs"),
        ({"response_format": {"type": "yaml"}}, "response_format.type"),
        ({"max_tokens": 0}, "max_tokens"),
    ],
)
def test_bad_fields_get_a_400_naming_them(
    chat_server: TuneserveServer, change: dict, param: str  # type: ignore[type-arg]
) -> None:
    body = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], **change}
    with chat_server.http() as http:
        response = http.post("/chat/completions", json=body)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_unknown_model_is_404(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="ft:nope:x::abc", messages=PROMPTS[0])
    assert info.value.body["code"] == "model_not_found"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("ft:nope:x::abc")


def test_client_disconnect_cancels_the_generation(chat_server: TuneserveServer) -> None:
    with httpx.Client(base_url=chat_server.base_url, timeout=60, headers={
            "Authorization": f"Bearer {chat_server.api_key}"}) as http, http.stream(
            "POST", "/chat/completions", json={
                "model": BASE, "messages": [{"role": "user", "content": "Tell a long story."}],
                "max_tokens": 900, "logit_bias": NO_END, "stream": True}) as response:
        for _ in response.iter_lines():
            break  # first token seen: hang up
    deadline = time.monotonic() + 15
    while running_requests(chat_server) > 0:
        assert time.monotonic() < deadline, "the engine kept generating for nobody"
        time.sleep(0.2)


def test_deleted_model_answers_404(sft_job, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    doomed = sft_job.fine_tuned_model + ":ckpt-step-6"
    assert _ask(client, doomed, PROMPTS[0])
    assert client.models.delete(doomed).deleted
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model=doomed, messages=PROMPTS[0], max_tokens=4)
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve(doomed)
    assert doomed not in {m.id for m in client.models.list()}
    with pytest.raises(openai.PermissionDeniedError):
        client.models.delete(BASE)


def test_killed_engine_ends_streams_with_an_error_answers_503_then_comes_back(  # type: ignore[no-untyped-def]
    sft_job, chat_server: TuneserveServer, client: openai.OpenAI
) -> None:
    stream = client.chat.completions.create(
        model=sft_job.fine_tuned_model, messages=PROMPTS[0], max_tokens=900, logit_bias=NO_END,
        stream=True)
    next(iter(stream))  # generating
    engine_process(chat_server).kill()
    with pytest.raises(openai.APIError) as cut:
        for _ in stream:
            pass
    assert "model server stopped" in cut.value.message  # an error event, not a cut connection
    with pytest.raises(openai.InternalServerError) as info:
        for _ in range(50):  # until the supervisor has noticed
            client.chat.completions.create(model=BASE, messages=PROMPTS[0], max_tokens=2)
            time.sleep(0.1)
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"]
    wait_for_engine(chat_server)
    # The engine warmed up before it was called ready: the first request to the new process
    # (a sample with log-probabilities, as Tinker's) does not pay vLLM's first-request cost
    # (3.2 s here, the next 0.1 s).
    t = time.monotonic()
    client.completions.create(model=BASE, prompt="Hi", max_tokens=1, logprobs=0)
    assert time.monotonic() - t < 1.5
    # The new engine process has never seen the adapter: it is registered again, no 404.
    assert '"answer"' in _ask(client, sft_job.fine_tuned_model, PROMPTS[0])


def test_a_base_model_this_node_does_not_serve_is_400(client: openai.OpenAI) -> None:
    from tests.conftest import SHORT_CONTEXT_MODEL

    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=SHORT_CONTEXT_MODEL, messages=PROMPTS[0])
    assert info.value.body["code"] == "model_not_served"
    assert info.value.body["param"] == "model"


def test_an_adapter_the_engine_cannot_load_is_a_clear_500(chat_server: TuneserveServer) -> None:
    import time as clock

    from storage.blob import LocalBlobStore
    from storage.db import Database
    from storage.models import FineTunedModel

    client = chat_server.client()
    project = client.fine_tuning.jobs.create(model=BASE, training_file=client.files.create(
        file=("t.jsonl", b"{}\n"), purpose="fine-tune").id).organization_id
    name = f"ft:{BASE}:default::broken01"
    LocalBlobStore(chat_server.data_dir / "blobs").put(
        "adapters/broken/adapter_config.json", b'{"r": "not a number"}')
    LocalBlobStore(chat_server.data_dir / "blobs").put(
        "adapters/broken/adapter_model.safetensors", b"not safetensors")
    db = Database(f"sqlite:///{chat_server.data_dir / 'tuneserve.db'}")
    with db.session() as s:
        s.add(FineTunedModel(id=name, project_id=project, job_id="none", base_model=BASE,
                             adapter_prefix="adapters/broken/", created_at=int(clock.time())))
    db.dispose()
    for _ in range(2):  # the second is answered from memory: no second load is tried
        with pytest.raises(openai.InternalServerError) as info:
            client.with_options(max_retries=0).chat.completions.create(
                model=name, messages=PROMPTS[0], max_tokens=2)
        assert info.value.status_code == 500
        assert info.value.body["code"] == "model_load_failed"
        assert "/" not in info.value.message  # no server path
        assert served_metric(chat_server, "tuneserve_adapter_loads_total", 'result="failed"') == 1
    assert _ask(client, BASE, PROMPTS[0])  # the engine is fine for everyone else


def test_chat_on_a_server_without_serving_is_503(s3_server: TuneserveServer) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        s3_server.client().chat.completions.create(model=BASE, messages=PROMPTS[0])
    assert info.value.status_code == 503
    assert info.value.body["code"] == "serving_disabled"


def test_the_engine_is_reachable_only_by_tuneserve(chat_server: TuneserveServer) -> None:
    engine = engine_process(chat_server)
    listening = [c for c in engine.net_connections(kind="inet") if c.status == "LISTEN"]
    assert listening == []  # a unix socket in the data dir, no port to take or to reach
    with engine_http(chat_server, key=False) as http:
        assert http.get("/v1/models").status_code == 401
    with engine_http(chat_server) as http:
        assert http.get("/v1/models").status_code == 200


@pytest.mark.parametrize("field", ["ignore_eos", "vllm_xargs", "priority", "cache_salt",
                                   "min_tokens"])
def test_engine_only_fields_are_not_tenants_to_set(chat_server: TuneserveServer,
                                                   field: str) -> None:
    body = {"model": BASE, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2,
            field: True}
    with chat_server.http() as http:
        response = http.post("/chat/completions", json=body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == field and error["code"] == "unknown_parameter"


def test_openai_only_fields_are_accepted(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=BASE, messages=[{"role": "user", "content": "hi"}], max_tokens=2, store=False,
        metadata={"team": "search"}, prompt_cache_key="k1", safety_identifier="user-1")
    assert answer.choices[0].message.content is not None


def test_n_times_max_tokens_is_capped(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=BASE, messages=PROMPTS[0], n=64, max_tokens=1000)
    assert info.value.body["param"] == "max_tokens"
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=BASE, messages=PROMPTS[0], n=64)
    assert info.value.body["param"] == "n"


def test_engine_errors_come_in_openai_s_envelope(sft_job, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    too_long = [{"role": "user", "content": "word " * 1500}]
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=sft_job.fine_tuned_model, messages=too_long,
                                       max_tokens=4)
    error = info.value.body
    assert isinstance(error["code"], str) and error["type"] == "invalid_request_error"
    assert "lora-" not in info.value.message, info.value.message


def test_the_prefix_cache_is_not_shared_across_projects(chat_server: TuneserveServer) -> None:
    prompt = [{"role": "user", "content": "Reference text: " + "alpha beta gamma " * 60}]

    def hits_after(key: str) -> float:
        chat_server.client(key).chat.completions.create(model=BASE, messages=prompt,
                                                        max_tokens=1)
        return engine_metric(chat_server, "vllm:prefix_cache_hits_total")

    start = engine_metric(chat_server, "vllm:prefix_cache_hits_total")
    first = hits_after(chat_server.api_key)
    again = hits_after(chat_server.api_key)
    assert again - first > 100  # the same project reuses its own cached prefix
    other = hits_after(chat_server.other_key())
    assert other == again, (start, first, again, other)  # another project finds none of it


def test_one_slow_health_check_does_not_restart_the_engine(chat_server: TuneserveServer,
                                                           client: openai.OpenAI) -> None:
    engine = engine_process(chat_server)
    engine.suspend()  # its next probe times out (5 s): one miss, fewer than three in a row
    time.sleep(6)
    engine.resume()
    time.sleep(2)
    assert engine_process(chat_server).pid == engine.pid
    assert _ask(client, BASE, PROMPTS[0])


def test_routing_decisions_are_in_the_metrics(sft_job, chat_server: TuneserveServer,  # type: ignore[no-untyped-def]
                                              client: openai.OpenAI) -> None:
    before = served_metric(chat_server, "tuneserve_routing_decisions_total", 'action="hit"')
    in_gpu = served_metric(chat_server, "tuneserve_routing_decisions_total", 'tier="gpu"')
    _ask(client, sft_job.fine_tuned_model, PROMPTS[0])  # a load or a hit
    _ask(client, sft_job.fine_tuned_model, PROMPTS[1])  # a hit
    _ask(client, BASE, PROMPTS[0])
    assert served_metric(chat_server, "tuneserve_routing_decisions_total",
                         'action="hit"') >= before + 1
    # The adapter just used is in a GPU slot (one of the most recently used) on the next hit.
    assert served_metric(chat_server, "tuneserve_routing_decisions_total",
                         'tier="gpu"') >= in_gpu + 1
    assert served_metric(chat_server, "tuneserve_routing_decisions_total", 'tier="none"') > 0


def test_completions_serve_base_and_fine_tuned_models(sft_job, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    for model in (BASE, sft_job.fine_tuned_model):
        answer = client.completions.create(model=model, prompt="The capital of France is",
                                           max_tokens=4, temperature=0)
        assert answer.model == model and answer.choices[0].text
    chunks = list(client.completions.create(model=sft_job.fine_tuned_model, prompt="Once",
                                            max_tokens=4, stream=True))
    assert chunks and {c.model for c in chunks} == {sft_job.fine_tuned_model}
    with pytest.raises(openai.BadRequestError) as info:
        client.completions.create(model=BASE, prompt="x", max_tokens=2, best_of=3)
    assert info.value.body["param"] == "best_of"


def test_responses_serve_base_and_fine_tuned_models(sft_job, client: openai.OpenAI,  # type: ignore[no-untyped-def]
                                                    chat_server: TuneserveServer) -> None:
    tuned = client.responses.create(model=sft_job.fine_tuned_model, input=PROMPTS[0],
                                    max_output_tokens=24, temperature=0)
    assert tuned.model == sft_job.fine_tuned_model and '"answer"' in tuned.output_text
    base = client.responses.create(model=BASE, input="Say hello.", max_output_tokens=8)
    assert base.model == BASE and base.output_text
    events = list(client.responses.create(model=sft_job.fine_tuned_model, input=PROMPTS[1],
                                          max_output_tokens=8, stream=True))
    assert events[-1].type == "response.completed"
    assert events[-1].response.model == sft_job.fine_tuned_model
    for field, value in (("previous_response_id", "resp_123"), ("background", True)):
        with pytest.raises(openai.BadRequestError) as info:
            client.responses.create(model=BASE, input="hi", **{field: value})
        assert info.value.body["param"] == field
    theirs = chat_server.client(chat_server.other_key())
    with pytest.raises(openai.NotFoundError):
        theirs.responses.create(model=sft_job.fine_tuned_model, input="hi")


@pytest.fixture(scope="module")
def tool_job(chat_server: TuneserveServer):  # type: ignore[no-untyped-def]
    """A small run on tool-call examples (weather questions answered by a tool call)."""
    from tests.support.training import tool_example, upload, wait_for

    client = chat_server.client()
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=upload(client, [tool_example(i) for i in range(16)]),
        suffix="tools", seed=3, method={"type": "supervised", "supervised": {
            "hyperparameters": {"n_epochs": 4, "batch_size": 8, "lora_rank": 8}}})
    done = wait_for(client, job.id)
    assert done.status == "succeeded", done.error
    return done


def test_a_base_model_takes_tools(client: openai.OpenAI) -> None:
    """The engine runs a tool parser for the base (no 400 naming vLLM flags); with tools
    offered and `none` chosen it answers in words."""
    from tests.support.training import WEATHER_TOOL

    question = [{"role": "user", "content": "What is the weather in Nice?"}]
    for choice in ("auto", "none"):
        answer = client.chat.completions.create(model=BASE, messages=question, max_tokens=24,
                                                temperature=0, tools=[WEATHER_TOOL],
                                                tool_choice=choice)
        message = answer.choices[0].message
        assert message.content or message.tool_calls
    assert not message.tool_calls and message.content


def test_a_model_trained_on_tool_calls_serves_them(tool_job, client: openai.OpenAI) -> None:  # type: ignore[no-untyped-def]
    from tests.support.training import WEATHER_TOOL

    calls = []
    for city in ("Geneva", "Munich", "Porto"):
        answer = client.chat.completions.create(
            model=tool_job.fine_tuned_model, max_tokens=40, temperature=0, tools=[WEATHER_TOOL],
            messages=[{"role": "user", "content": f"What is the weather in {city}?"}])
        message = answer.choices[0].message
        if message.tool_calls:
            calls.append((message.tool_calls[0].function.name,
                          json.loads(message.tool_calls[0].function.arguments)))
    assert len(calls) >= 2, calls  # tool_choice auto: the parser found the trained calls
    assert all(name == "get_weather" and "city" in args for name, args in calls), calls
    chunks = list(client.chat.completions.create(
        model=tool_job.fine_tuned_model, max_tokens=40, temperature=0, tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "What is the weather in Geneva?"}], stream=True))
    assert any(c.choices and c.choices[0].delta.tool_calls for c in chunks)
