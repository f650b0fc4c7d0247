"""The Responses API for agents: responses stored in tuneserve's database (scoped to their
project), `previous_response_id` chains, function calls and their outputs, `instructions`,
`text.format` with a JSON schema, and the OpenAI Agents SDK chaining a streamed run; what this
server does not offer is a 400 naming the field.

The control-plane tests run in this process without an engine (the stored responses are kept
by the code that keeps an engine's answer); the engine tests talk to the suite's vLLM on the
real base, through the official openai client."""

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jsonschema
import openai
import pytest
from agents import (
    Agent,
    ModelSettings,
    OpenAIResponsesModel,
    Runner,
    function_tool,
    set_tracing_disabled,
)
from openai import AsyncOpenAI
from sqlalchemy import select

from api.responses.schemas import ResponseRequest
from api.responses.service import Chain, Keeper
from storage.db import Database
from storage.models import Project
from tests.support.in_process import InProcessControlPlane, control_plane_in_process
from tests.support.server import TuneserveServer
from tests.support.training import BASE

set_tracing_disabled(True)

# --- the control plane, in process ---------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def plane(request: pytest.FixtureRequest,
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessControlPlane]:
    with control_plane_in_process(request, request.param, tmp_path_factory.mktemp("responses"),
                                  max_response_chain=2, max_stored_response_bytes=4096) as p:
        yield p


def _project_of(plane: InProcessControlPlane) -> str:
    """The id of the project of the plane's own key."""
    with plane.services.db.session() as session:
        project_id = session.scalar(select(Project.id).where(
            Project.name == plane.settings.default_project))
    assert project_id is not None
    return project_id


def _engine_answer(response_id: str, text: str, previous: str | None = None) -> dict[str, Any]:
    """A response as vLLM answers it (it is sent `store: false` and no previous id)."""
    return {"id": response_id, "object": "response", "created_at": 1, "model": BASE,
            "status": "completed", "store": False, "previous_response_id": None,
            "output": [{"id": f"msg_{response_id}", "type": "message", "role": "assistant",
                        "status": "completed",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}]}


def _keep(db: Database, project_id: str, body: dict[str, Any], answer: dict[str, Any],
          depth: int = 1) -> dict[str, Any]:
    """What the route does with an engine's whole answer for `body`."""
    request = ResponseRequest(model=BASE, **body)
    own = [{"role": "user", "content": request.input}] if isinstance(request.input, str) \
        else request.input
    keeper = Keeper(db, project_id, request, Chain([], depth), own, 4096)
    kept: dict[str, Any] = asyncio.run(keeper.answer(answer))
    return kept


def _refused(answer: Any, status: int, param: str, code: str | None = None) -> None:
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["param"] == param, error
    assert code is None or error["code"] == code, error


@pytest.mark.parametrize(("field", "value", "param"), [
    ("background", True, "background"),
    ("conversation", "conv_123", "conversation"),
    ("prompt", {"id": "pmpt_123"}, "prompt"),
    ("tools", [{"type": "web_search_preview"}], "tools[0].type"),
    ("tools", [{"type": "function", "name": "f"}, {"type": "file_search"}], "tools[1].type"),
    ("tool_choice", {"type": "web_search_preview"}, "tool_choice.type"),
])
def test_what_is_not_offered_is_a_400_naming_it(plane: InProcessControlPlane, field: str,
                                                value: Any, param: str) -> None:
    with plane.http() as http:
        answer = http.post("/responses", json={"model": BASE, "input": "hi", field: value})
    _refused(answer, 400, param)
    assert "not supported" in answer.json()["error"]["message"]


def test_a_previous_response_is_the_projects_own(plane: InProcessControlPlane) -> None:
    mine = _project_of(plane)
    kept = _keep(plane.services.db, mine, {"input": "My name is Ada."},
                 _engine_answer("resp_ada", "Hello Ada."))
    assert kept["store"] is True and kept["previous_response_id"] is None
    other = plane.other_key()
    with plane.http(other) as theirs, plane.http() as http:
        for response_id in ("resp_ada", "resp_unknown"):
            who = theirs if response_id == "resp_ada" else http
            _refused(who.post("/responses", json={
                "model": BASE, "input": "What is my name?", "previous_response_id": response_id}),
                400, "previous_response_id", "previous_response_not_found")
            for answer in (who.get(f"/responses/{response_id}"),
                           who.get(f"/responses/{response_id}/input_items"),
                           who.delete(f"/responses/{response_id}")):
                _refused(answer, 404, "response_id", "not_found")
        # The owner finds it; with serving off here, the request gets as far as the engine.
        assert http.get("/responses/resp_ada").json() == kept
        answer = http.post("/responses", json={
            "model": BASE, "input": "What is my name?", "previous_response_id": "resp_ada"})
        assert answer.status_code == 503 and answer.json()["error"]["code"] == "serving_disabled"
        assert http.delete("/responses/resp_ada").json() == {
            "id": "resp_ada", "object": "response", "deleted": True}
        _refused(http.get("/responses/resp_ada"), 404, "response_id")


def test_input_items_page_as_openai_lists_them(plane: InProcessControlPlane) -> None:
    items = [{"role": "user", "content": f"message {i}"} for i in range(5)]
    _keep(plane.services.db, _project_of(plane), {"input": items},
          _engine_answer("resp_five", "ok"))
    client = plane.client()
    newest = client.responses.input_items.list("resp_five", limit=2)
    assert [i.content[0].text for i in newest.data] == ["message 4", "message 3"]
    assert newest.has_more and all(i.type == "message" and i.id for i in newest.data)
    seen = [i.content[0].text for i in client.responses.input_items.list(
        "resp_five", order="asc", limit=2)]  # auto-paged
    assert seen == [f"message {i}" for i in range(5)]
    with plane.http() as http:
        _refused(http.get("/responses/resp_five/input_items", params={"after": "msg_nope"}),
                 400, "after", "invalid_cursor")
        _refused(http.get("/responses/resp_five/input_items", params={"limit": 101}), 400,
                 "limit")


def test_chains_and_stored_sizes_are_bounded(plane: InProcessControlPlane) -> None:
    db, project = plane.services.db, _project_of(plane)
    _keep(db, project, {"input": "one"}, _engine_answer("resp_1", "1"))
    _keep(db, project, {"input": "two", "previous_response_id": "resp_1"},
          _engine_answer("resp_2", "2"), depth=2)
    with plane.http() as http:
        # The plane keeps chains of 2: continuing resp_1 is allowed, resp_2 is not.
        _refused(http.post("/responses", json={
            "model": BASE, "input": "three", "previous_response_id": "resp_2"}),
            400, "previous_response_id", "previous_response_chain_too_long")
        assert http.post("/responses", json={
            "model": BASE, "input": "two again", "previous_response_id": "resp_1",
        }).json()["error"]["code"] == "serving_disabled"
        # 4096 bytes stored at most: a larger input is refused unless it is not stored.
        big = {"model": BASE, "input": "x" * 5000}
        _refused(http.post("/responses", json=big), 400, "input", "response_too_large_to_store")
        assert http.post("/responses", json={**big, "store": False}).status_code == 503
    # An answer that grows past the cap is answered, not stored.
    kept = _keep(db, project, {"input": "long"}, _engine_answer("resp_long", "y" * 5000))
    assert kept["output"][0]["content"][0]["text"] == "y" * 5000
    with plane.http() as http:
        assert http.get("/responses/resp_long").status_code == 404


def test_a_chain_may_hold_no_more_than_one_request_carries(
        request: pytest.FixtureRequest, tmp_path: Path) -> None:
    # Each response is stored (up to 4096 bytes) and the chain is long enough; together
    # they are more than a request may carry (6000 bytes), so continuing them is refused
    # before the chain is sent on, or read any further.
    with control_plane_in_process(request, "sqlite", tmp_path, max_response_chain=10,
                                  max_stored_response_bytes=4096,
                                  max_inference_body_bytes=6000) as plane:
        db, project = plane.services.db, _project_of(plane)
        _keep(db, project, {"input": "a" * 3000}, _engine_answer("resp_a", "1"))
        _keep(db, project, {"input": "b" * 3000, "previous_response_id": "resp_a"},
              _engine_answer("resp_b", "2", "resp_a"), depth=2)
        with plane.http() as http:
            assert http.post("/responses", json={
                "model": BASE, "input": "c", "previous_response_id": "resp_a",
            }).json()["error"]["code"] == "serving_disabled"
            _refused(http.post("/responses", json={
                "model": BASE, "input": "c", "previous_response_id": "resp_b"}),
                400, "previous_response_id", "previous_response_chain_too_large")


def test_a_streamed_response_is_kept_before_its_end_goes_on(
        plane: InProcessControlPlane) -> None:
    db, project = plane.services.db, _project_of(plane)
    created = {"type": "response.created", "sequence_number": 0,
               "response": {**_engine_answer("resp_s", ""), "status": "in_progress",
                            "output": []}}
    delta = {"type": "response.output_text.delta", "sequence_number": 1, "item_id": "msg_1",
             "output_index": 0, "content_index": 0, "delta": '"response": no'}
    done = {"type": "response.completed", "sequence_number": 2,
            "response": _engine_answer("resp_s", '"response": no')}
    sse = b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode()
                   for e in (created, delta, done))
    request = ResponseRequest(model=BASE, input="hi", stream=True,
                              previous_response_id="resp_before")
    keeper = Keeper(db, project, request, Chain([], 2), [{"role": "user", "content": "hi"}],
                    4096)
    seen_stored: list[int] = []

    async def relay() -> bytes:
        async def chunks() -> AsyncIterator[bytes]:
            for i in range(0, len(sse), 7):  # events split anywhere
                yield sse[i:i + 7]

        out = b""
        async for chunk in keeper.stream(chunks()):
            if b"response.completed" in chunk:
                with plane.http() as http:
                    seen_stored.append(http.get("/responses/resp_s").status_code)
            out += chunk
        return out

    events = [json.loads(line[6:]) for line in asyncio.run(relay()).split(b"\n")
              if line.startswith(b"data: ")]
    assert [e["type"] for e in events] == [e["type"] for e in (created, delta, done)]
    assert events[1] == delta
    for event in (events[0], events[2]):
        assert event["response"]["store"] is True
        assert event["response"]["previous_response_id"] == "resp_before"
    assert seen_stored == [200]
    with plane.http() as http:
        assert http.get("/responses/resp_s").json() == events[2]["response"]


# --- on the engine ---------------------------------------------------------------------------

TIME_TOOL = {"type": "function", "name": "get_time", "description": "The local time in a city.",
             "strict": True, "parameters": {
                 "type": "object", "properties": {"city": {"type": "string"}},
                 "required": ["city"], "additionalProperties": False}}


@pytest.fixture(scope="module")
def client(chat_server: TuneserveServer) -> openai.OpenAI:
    return chat_server.client()


def _item(item: Any) -> dict[str, Any]:
    """An output item as the next request's input takes it."""
    return item.model_dump(exclude_none=True)  # type: ignore[no-any-return]


def test_previous_response_id_sends_the_chain_without_its_instructions(
        client: openai.OpenAI) -> None:
    first = client.responses.create(
        model=BASE, input="My name is Ada.", max_output_tokens=6, temperature=0,
        instructions="You are a terse assistant who answers every question in verse.")
    assert first.store is True and client.responses.retrieve(first.id).output_text == \
        first.output_text
    second = client.responses.create(model=BASE, input="What is my name?",
                                     previous_response_id=first.id, max_output_tokens=6,
                                     temperature=0)
    assert second.previous_response_id == first.id and second.output_text
    # What the replica was sent: the same as the whole history sent by hand, without the
    # first request's instructions.
    by_hand = client.responses.create(
        model=BASE, store=False, max_output_tokens=6, temperature=0,
        input=[{"role": "user", "content": "My name is Ada."}, *map(_item, first.output),
               {"role": "user", "content": "What is my name?"}])
    assert second.usage and by_hand.usage
    assert second.usage.input_tokens == by_hand.usage.input_tokens
    # Its own input only is listed; a response not stored is not found.
    listed = client.responses.input_items.list(second.id)
    assert [i.content[0].text for i in listed.data] == ["What is my name?"]  # type: ignore[union-attr]
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(by_hand.id)
    client.responses.delete(first.id)
    with pytest.raises(openai.BadRequestError) as info:
        client.responses.create(model=BASE, input="hi", previous_response_id=first.id)
    assert info.value.body["code"] == "previous_response_not_found"  # type: ignore[index]


def test_a_function_call_is_answered_through_previous_response_id(
        client: openai.OpenAI) -> None:
    call = client.responses.create(
        model=BASE, input="What time is it in Paris?", tools=[TIME_TOOL],  # type: ignore[list-item]
        tool_choice={"type": "function", "name": "get_time"}, max_output_tokens=48,
        temperature=0)
    calls = [item for item in call.output if item.type == "function_call"]
    assert len(calls) == 1 and json.loads(calls[0].arguments)["city"], call.output
    output = {"type": "function_call_output", "call_id": calls[0].call_id, "output": "09:30"}
    chained = client.responses.create(
        model=BASE, previous_response_id=call.id, input=[output],  # type: ignore[list-item]
        tools=[TIME_TOOL], max_output_tokens=12, temperature=0)  # type: ignore[list-item]
    whole = client.responses.create(
        model=BASE, store=False, tools=[TIME_TOOL], max_output_tokens=12,  # type: ignore[list-item]
        temperature=0, input=[{"role": "user", "content": "What time is it in Paris?"},
                              _item(calls[0]), output])  # type: ignore[list-item]
    assert chained.status in ("completed", "incomplete") and chained.output
    assert chained.usage and whole.usage
    assert chained.usage.input_tokens == whole.usage.input_tokens
    assert chained.output_text == whole.output_text


def test_instructions_and_a_json_schema_reach_the_engine(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"answer": {"type": "integer"}},
              "required": ["answer"], "additionalProperties": False}
    asked = {"model": BASE, "input": "What is 2 + 3?", "max_output_tokens": 24,
             "temperature": 0}
    told = client.responses.create(instructions="Answer with a number only.", **asked)
    assert told.instructions == "Answer with a number only."
    # The instructions are the system message: the same prompt as one sent in the input.
    as_input = client.responses.create(**{**asked, "input": [
        {"role": "system", "content": "Answer with a number only."},
        {"role": "user", "content": asked["input"]}]})
    assert told.usage and as_input.usage
    assert told.usage.input_tokens == as_input.usage.input_tokens
    assert told.output_text == as_input.output_text
    shaped = client.responses.create(
        text={"format": {"type": "json_schema", "name": "sum", "schema": schema,
                         "strict": True}}, **asked)
    assert shaped.status == "completed", shaped.incomplete_details
    jsonschema.validate(json.loads(shaped.output_text), schema)


def test_a_streamed_response_is_stored_and_continued(client: openai.OpenAI) -> None:
    events = list(client.responses.create(model=BASE, input="Say hello.", max_output_tokens=6,
                                          stream=True))
    assert events[0].type == "response.created" and events[-1].type == "response.completed"
    done = events[-1].response  # type: ignore[union-attr]
    assert done.store is True
    assert client.responses.retrieve(done.id).output_text == done.output_text
    after = list(client.responses.create(model=BASE, input="Again.", max_output_tokens=6,
                                         previous_response_id=done.id, stream=True))
    assert after[-1].response.previous_response_id == done.id  # type: ignore[union-attr]


# The cities the weather tool was asked about, in order.
asked_cities: list[str] = []


@function_tool
def get_weather(city: str) -> str:
    """The current weather in a city."""
    asked_cities.append(city)
    return f"Sunny, 21 C in {city}."


def test_the_agents_sdk_chains_a_streamed_run(chat_server: TuneserveServer,
                                              client: openai.OpenAI) -> None:
    sdk_client = AsyncOpenAI(base_url=chat_server.base_url, api_key=chat_server.api_key,
                             max_retries=0, timeout=120)
    model = OpenAIResponsesModel(model=BASE, openai_client=sdk_client)
    weather = Agent(name="weather", instructions="Answer with the get_weather tool.",
                    tools=[get_weather], model=model,
                    model_settings=ModelSettings(tool_choice="required", temperature=0,
                                                 max_tokens=48))
    follow_up = Agent(name="follow-up", instructions="Answer briefly.", model=model,
                      model_settings=ModelSettings(temperature=0, max_tokens=12))

    async def run(agent: Agent, question: str, **chaining: Any) -> tuple[list[str], Any]:
        streamed = Runner.run_streamed(agent, question, max_turns=3, **chaining)
        raw = [event.data.type async for event in streamed.stream_events()
               if event.type == "raw_response_event"]
        return raw, streamed

    async def both() -> list[tuple[list[str], Any]]:
        # Each turn after the first sends only its new items, with the previous turn's id;
        # the second run goes on from the first one's last response. One event loop: the
        # SDK's client keeps its connections on it.
        first = await run(weather, "What is the weather in Oslo?",
                          auto_previous_response_id=True)
        return [first, await run(follow_up, "And tomorrow?",
                                 previous_response_id=first[1].last_response_id)]

    asked_cities.clear()
    (raw, first), (raw_after, second) = asyncio.run(both())
    assert raw.count("response.completed") == 2 and len(asked_cities) == 1, raw
    assert isinstance(first.final_output, str) and first.final_output
    answered = client.responses.retrieve(first.last_response_id)
    assert answered.previous_response_id is not None
    sent = client.responses.input_items.list(first.last_response_id).data
    assert [item.type for item in sent] == ["function_call_output"]
    assert raw_after.count("response.completed") == 1 and second.final_output
    assert client.responses.retrieve(second.last_response_id).previous_response_id == \
        first.last_response_id
