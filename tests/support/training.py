"""Training data and waiting helpers for the job tests."""

import json
import time

import openai
import psutil
from openai.types.fine_tuning import FineTuningJob

from storage.base_models import DEFAULT_BASE_MODEL
from training.jobs import TERMINAL as TERMINAL  # re-exported for the job tests

BASE = DEFAULT_BASE_MODEL


def sft_example(i: int) -> dict:  # type: ignore[type-arg]
    # A behaviour the base model does not have: every answer is a small JSON object.
    return {"messages": [
        {"role": "system", "content": "You answer in JSON."},
        {"role": "user", "content": f"What is {i} plus {i}?"},
        {"role": "assistant", "content": json.dumps({"answer": 2 * i, "unit": "none"})},
    ]}


WEATHER_TOOL = {"type": "function", "function": {
    "name": "get_weather", "description": "The current weather in a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
CITIES = ["Paris", "Lyon", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Prague", "Lisbon",
          "Dublin", "Athens", "Warsaw", "Zurich", "Brussels", "Helsinki", "Budapest"]


def tool_example(i: int) -> dict:  # type: ignore[type-arg]
    """A weather question answered by a call of the weather tool, as OpenAI's format has it."""
    city = CITIES[i % len(CITIES)]
    question = ["What is the weather in {}?", "Is it raining in {} now?",
                "How warm is it in {} today?"][i % 3].format(city)
    return {"tools": [WEATHER_TOOL], "messages": [
        {"role": "user", "content": question},
        {"role": "assistant", "tool_calls": [{
            "id": f"call_{i}", "type": "function",
            "function": {"name": "get_weather", "arguments": json.dumps({"city": city})}}]},
    ]}


def dpo_example(i: int) -> dict:  # type: ignore[type-arg]
    return {
        "input": {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"}]},
        "preferred_output": [{"role": "assistant", "content": str(2 * i)}],
        "non_preferred_output": [{"role": "assistant", "content": "I cannot say."}],
    }


def jsonl(records: list) -> bytes:  # type: ignore[type-arg]
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def upload(client: openai.OpenAI, records: list, name: str = "train.jsonl") -> str:  # type: ignore[type-arg]
    return client.files.create(file=(name, jsonl(records)), purpose="fine-tune").id


def wait_for(client: openai.OpenAI, job_id: str, statuses: tuple[str, ...] = TERMINAL,
             timeout: float = 300) -> FineTuningJob:
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        if job.status in statuses:
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {job.status} after {timeout}s")
        time.sleep(0.5)


def wait_for_evaluation(client: openai.OpenAI, job_id: str,
                        timeout: float = 300) -> FineTuningJob:
    """The succeeded job once its built-in evaluation is no longer waiting or running (the
    serving engine answers it after the job succeeded)."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.fine_tuning.jobs.retrieve(job_id)
        evaluation = (job.model_extra or {}).get("evaluation") or {}
        if job.status in TERMINAL and evaluation.get("status") not in ("pending", "running"):
            return job
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id}: evaluation still {evaluation} after {timeout}s")
        time.sleep(0.5)


def wait_for_event(client: openai.OpenAI, job_id: str, fragment: str,
                   timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(fragment in e.message for e in client.fine_tuning.jobs.list_events(job_id,
                                                                                  limit=200)):
            return
        time.sleep(0.5)
    raise AssertionError(f"no event with {fragment!r} for {job_id} after {timeout}s")


def events(client: openai.OpenAI, job_id: str) -> list:  # type: ignore[type-arg]
    """All of a job's events, oldest first."""
    return list(reversed(list(client.fine_tuning.jobs.list_events(job_id, limit=1000))))


def train_steps(client: openai.OpenAI, job_id: str) -> list[int]:
    """The steps a job's metrics events report, in order."""
    return [e.data["step"] for e in events(client, job_id)
            if e.type == "metrics" and "train_loss" in e.data]


def worker_processes(job_id: str, module: str = "training.worker") -> list[psutil.Process]:
    """This machine's training workers of a job (any attempt); with `module`
    "training.tinker.trainer", the trainers of a Tinker run (`job_id`: its model id)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if module in cmd and job_id in cmd:
            found.append(proc)
    return found
