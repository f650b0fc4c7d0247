"""Chat completions on the shared vLLM engine, base model and tenants' adapters, through the
official openai client."""

import json
import threading
import time

import httpx
import openai
import pytest

from tests.support.chat import engine_process, running_requests, wait_for_engine
from tests.support.openai_spec import assert_matches
from tests.support.server import TuneserveServer
from tests.support.training import BASE, sft_example

PROMPTS = [sft_example(i)["messages"][:-1] for i in (3, 5, 11)]


@pytest.fixture(scope="module")
def chat_server(local_server: TuneserveServer) -> TuneserveServer:
    wait_for_engine(local_server)
    return local_server


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
                "max_tokens": 900, "min_tokens": 900, "stream": True}) as response:
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


def test_killed_engine_answers_503_then_comes_back(  # type: ignore[no-untyped-def]
    sft_job, chat_server: TuneserveServer, client: openai.OpenAI
) -> None:
    engine_process(chat_server).kill()
    with pytest.raises(openai.InternalServerError) as info:
        for _ in range(50):  # until the supervisor has noticed
            client.chat.completions.create(model=BASE, messages=PROMPTS[0], max_tokens=2)
            time.sleep(0.1)
    assert info.value.status_code == 503
    assert info.value.response.headers["retry-after"]
    wait_for_engine(chat_server)
    assert '"answer"' in _ask(client, sft_job.fine_tuned_model, PROMPTS[0])


def test_engine_does_not_outlive_a_killed_api(
    tmp_path, local_server: TuneserveServer  # type: ignore[no-untyped-def]
) -> None:
    server = TuneserveServer(tmp_path / "data", {
        "TUNESERVE_MODELS_DIR": local_server.env["TUNESERVE_MODELS_DIR"],
        "TUNESERVE_SERVING_ENABLED": "true"})
    server.start()
    try:
        wait_for_engine(server)
        engine = engine_process(server)
        server.proc.kill()  # type: ignore[union-attr]
        engine.wait(timeout=60)  # raises if the engine lives on
    finally:
        server.stop()


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
    with pytest.raises(openai.InternalServerError) as info:
        client.chat.completions.create(model=name, messages=PROMPTS[0], max_tokens=2)
    assert info.value.status_code == 500
    assert info.value.body["code"] == "model_load_failed"
    assert _ask(client, BASE, PROMPTS[0])  # the engine is fine for everyone else


def test_chat_on_a_server_without_serving_is_503(s3_server: TuneserveServer) -> None:
    with pytest.raises(openai.InternalServerError) as info:
        s3_server.client().chat.completions.create(model=BASE, messages=PROMPTS[0])
    assert info.value.status_code == 503
    assert info.value.body["code"] == "serving_disabled"
