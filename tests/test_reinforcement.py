"""Reinforcement fine-tuning (`method.type = "reinforcement"`) through the official client:
a grader's reward trains the model (TRL's GRPO through Unsloth, on the CPU here), the events
carry the reward, and the model is served. Bad graders and data are clear 400s / failures."""

import json
from typing import Any

import openai
import pytest

from tests.support.server import TuneserveServer, metric
from tests.support.training import (
    BASE,
    events,
    jsonl,
    sft_example,
    wait_for,
    wait_for_evaluation,
)

QUESTIONS = ["Is the sky blue?", "Is fire hot?", "Is water wet?", "Is ice cold?",
             "Do fish swim?", "Do birds fly?", "Is the sun bright?", "Is snow white?",
             "Is grass green?", "Do cats purr?", "Is honey sweet?", "Do dogs bark?"]
SAYS_YES = {"type": "string_check", "name": "says_yes", "operation": "ilike",
            "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}

# The served base judges: a digit, as the prompt asks (parsed as the score).
JUDGE = {"type": "score_model", "name": "judge", "model": BASE,
         "input": [{"role": "system", "content": "You grade answers. Reply with one digit: "
                    "1 if the answer says yes, 0 if it does not."},
                   {"role": "user", "content": "Answer: {{sample.output_text}}"}],
         "sampling_params": {"max_completions_tokens": 3, "temperature": 0}}


def _rows() -> list[dict[str, Any]]:
    return [{"messages": [{"role": "user", "content": f"{q} Answer yes or no."}],
             "answer": "yes"} for q in QUESTIONS]


def _method(grader: dict[str, Any], **hyperparameters: Any) -> dict[str, Any]:
    return {"type": "reinforcement",
            "reinforcement": {"grader": grader, "hyperparameters": hyperparameters}}


def test_a_string_check_reward_rises_and_the_model_is_served(
        local_server: TuneserveServer) -> None:
    client = local_server.client()
    training = client.files.create(file=("rft.jsonl", jsonl(_rows())), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=training.id, suffix="rft", seed=3,
        # 3 steps an epoch; the learning rate is the default one.
        method=_method(SAYS_YES, n_epochs=3, batch_size=4, num_generations=4,  # type: ignore[arg-type]
                       max_completion_tokens=8, lora_rank=8))
    done = wait_for(client, job.id, timeout=900)
    assert done.status == "succeeded", done.error
    assert done.method.type == "reinforcement"  # type: ignore[union-attr]
    metrics = sorted((e.data for e in events(client, job.id)
                      if e.type == "metrics" and "reward_mean" in (e.data or {})),
                     key=lambda d: d["step"])
    assert len(metrics) == 9 and all("says_yes" in d["rewards"] for d in metrics)
    first = sum(d["reward_mean"] for d in metrics[:3]) / 3
    last = sum(d["reward_mean"] for d in metrics[-3:]) / 3
    assert last > first + 0.2, [round(d["reward_mean"], 2) for d in metrics]

    answer = client.chat.completions.create(
        model=done.fine_tuned_model, max_tokens=8,  # type: ignore[arg-type]
        messages=[{"role": "user", "content": "Is milk white? Answer yes or no."}])
    assert answer.choices[0].message.content


def test_rows_that_bring_tools_are_trained_with_them(local_server: TuneserveServer) -> None:
    # Each row's tools are rendered into its prompt (TRL's GRPO knows one set for all).
    client = local_server.client()
    lookup = {"type": "function", "function": {
        "name": "look_up", "description": "Looks a fact up.",
        "parameters": {"type": "object", "properties": {"fact": {"type": "string"}}}}}
    rows = [{**row, "tools": [lookup]} if i % 2 else row for i, row in enumerate(_rows()[:10])]
    training = client.files.create(file=("rft-tools.jsonl", jsonl(rows)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=training.id, seed=3,
        method=_method(SAYS_YES, n_epochs=1, batch_size=10, num_generations=2,  # type: ignore[arg-type]
                       max_completion_tokens=4, lora_rank=8))
    done = wait_for(client, job.id, timeout=900)
    assert done.status == "succeeded", done.error
    (step,) = [e.data for e in events(client, job.id)
               if e.type == "metrics" and "reward_mean" in (e.data or {})]
    assert "says_yes" in step["rewards"]


def test_a_score_model_reward_is_judged_by_a_served_model_with_the_job_s_own_key(
        local_server: TuneserveServer) -> None:
    client = local_server.client()
    chats = {"method": "POST", "route": "/v1/chat/completions", "status": "200"}
    asked = "tuneserve_http_request_duration_seconds_count"
    before = metric(local_server.metrics(), asked, **chats)
    training = client.files.create(file=("rft.jsonl", jsonl(_rows()[:10])), purpose="fine-tune")
    validation = client.files.create(file=("rft-valid.jsonl", jsonl(_rows()[10:])),
                                     purpose="fine-tune")
    mix = {"type": "multi", "name": "mix", "graders": {"judge": JUDGE, "yes": SAYS_YES},
           "calculate_output": "0.5 * judge + 0.5 * yes"}
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=training.id, validation_file=validation.id, seed=5,
        method=_method(mix, n_epochs=1, batch_size=5, num_generations=2,  # type: ignore[arg-type]
                       max_completion_tokens=6, lora_rank=8, eval_interval=1))
    done = wait_for(client, job.id, timeout=900)
    assert done.status == "succeeded", done.error
    hyperparameters = done.method.reinforcement.hyperparameters  # type: ignore[union-attr]
    assert (hyperparameters.eval_interval, hyperparameters.eval_samples) == (1, 1)
    all_metrics = [e.data or {} for e in events(client, job.id) if e.type == "metrics"]
    metrics = [d for d in all_metrics if "reward_mean" in d]
    assert len(metrics) == 2, metrics
    for step in metrics:
        assert {"mix", "mix.judge", "mix.yes"} <= set(step["rewards"]), step
        assert 0 <= step["rewards"]["mix.judge"] <= 1 and 0 <= step["grader_error_rate"] <= 1
    # The 2 validation prompts are answered and graded after every step (eval_interval 1):
    # a step's event carries the evaluation before it, as for supervised jobs.
    last = metrics[-1]
    assert 0 <= last["valid_reward_mean"] <= 1 and "mix" in last["valid_rewards"], last
    # Its checkpoint lists (an object in its metrics was a 500), each grader's validation
    # reward a number of its own.
    (checkpoint,) = client.fine_tuning.jobs.checkpoints.list(job.id)
    assert checkpoint.step_number == 2
    rewards = checkpoint.metrics.model_extra or {}
    assert {"valid_reward_mean", "valid_rewards_mix", "valid_rewards_mix.judge"} <= set(
        rewards), rewards
    assert 0 <= rewards["valid_rewards_mix"] <= 1
    (full,) = [d for d in all_metrics if "full_valid_reward_mean" in d]
    assert 0 <= full["full_valid_reward_mean"] <= 1
    assert 0 <= full["full_valid_grader_error_rate"] <= 1
    # 2 steps of 5 prompts with 2 answers each, and the 2 validation prompts' one answer at
    # each evaluation (after each of the 2 steps, and the full one at the end, its answers
    # judged with the job's key still valid): every answer judged once through the API.
    assert metric(local_server.metrics(), asked, **chats) - before == 20 + 2 * 2 + 2
    (key,) = [k for k in local_server.api_keys() if k["job"] == job.id]
    assert key["revoked"] == "yes" and key["project"] == "default"

    # After it succeeded, the serving engine answers the validation prompts with the base
    # and the tuned model, and the job's own grader scores them: its evaluation.
    evaluation = wait_for_evaluation(client, job.id).model_extra["evaluation"]  # type: ignore[index]
    assert (evaluation["status"], evaluation["generated_by"], evaluation["n_examples"]) == (
        "completed", "engine", 2), evaluation
    for model in ("base", "fine_tuned"):
        scores = evaluation[model]
        assert set(scores) == {"reward", "passed", "reward_judge", "reward_yes"}, scores
        assert 0 <= scores["reward"] <= 1 and 0 <= scores["passed"] <= 1
    lines = [json.loads(line) for line in
             client.files.content(evaluation["result_file"]).read().decode().splitlines()]
    assert [line["item"] for line in lines] == _rows()[10:]
    tuned = [line["fine_tuned_scores"] for line in lines]
    # The pass rate is the share of answers whose reward is at least 0.5.
    assert evaluation["fine_tuned"]["passed"] == sum(s["reward"] >= 0.5 for s in tuned) / 2
    assert any(e.message.startswith("Evaluation on 2 validation prompts: mean reward")
               for e in events(client, job.id))


def test_a_judge_deleted_before_it_is_asked_fails_the_job_naming_the_grader_s_model(
        local_server: TuneserveServer) -> None:
    client = local_server.client()
    sft = client.files.create(file=("judge.jsonl", jsonl([sft_example(i) for i in range(10)])),
                              purpose="fine-tune")
    judge_job = client.fine_tuning.jobs.create(
        model=BASE, training_file=sft.id, suffix="judge",
        # lora_rank is this server's extension, unknown to the client's Method type.
        method={"type": "supervised", "supervised": {"hyperparameters": {  # type: ignore[arg-type]
            "n_epochs": 1, "batch_size": 10, "lora_rank": 8}}})
    judge = wait_for(client, judge_job.id, timeout=600)
    assert judge.status == "succeeded", judge.error
    training = client.files.create(file=("rft.jsonl", jsonl(_rows()[:10])), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(
        model=BASE, training_file=training.id,
        method=_method({**JUDGE, "model": judge.fine_tuned_model}, n_epochs=1,  # type: ignore[arg-type]
                       batch_size=5, num_generations=2, max_completion_tokens=4, lora_rank=8))
    client.models.delete(judge.fine_tuned_model)  # type: ignore[arg-type]
    done = wait_for(client, job.id, timeout=600)
    assert done.status == "failed" and done.error is not None
    assert (done.error.code, done.error.param) == ("model_not_found",
                                                   "method.reinforcement.grader.model")
    assert judge.fine_tuned_model in done.error.message
    (key,) = [k for k in local_server.api_keys() if k["job"] == job.id]
    assert key["revoked"] == "yes"


@pytest.mark.parametrize("method, param", [
    ({"type": "reinforcement"}, "method.reinforcement.grader"),
    (_method({"type": "python", "name": "p", "source": "def grade(s, i): return 1"}),
     "method.reinforcement.grader.type"),
    (_method({**SAYS_YES, "operation": "regex"}), "method.reinforcement.grader.operation"),
    (_method({**JUDGE, "model": "ft:nobody-s-model"}), "method.reinforcement.grader.model"),
    (_method({"type": "multi", "name": "m", "calculate_output": "a + judge",
              "graders": {"a": SAYS_YES, "judge": {**JUDGE, "model": "gpt-4o"}}}),
     "method.reinforcement.grader.graders.judge.model"),
    (_method({"type": "multi", "name": "m", "graders": {"a": SAYS_YES},
              "calculate_output": "a +"}), "method.reinforcement.grader.calculate_output"),
    ({"type": "reinforcement", "reinforcement": {"grader": SAYS_YES,
                                                 "response_format": {"type": "json_object"}}},
     "method.reinforcement.response_format"),
    (_method(SAYS_YES, num_generations=1),
     "method.reinforcement.hyperparameters.num_generations"),
])
def test_bad_reinforcement_jobs_are_400s_naming_the_field(
        s3_server: TuneserveServer, method: dict[str, Any], param: str) -> None:
    client = s3_server.client()
    training = client.files.create(file=("rft.jsonl", jsonl(_rows())), purpose="fine-tune")
    with pytest.raises(openai.BadRequestError) as info:
        client.fine_tuning.jobs.create(model=BASE, training_file=training.id,
                                       method=method)  # type: ignore[arg-type]
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == param, error


def test_reinforcement_data_whose_prompt_ends_with_an_answer_fails_validation(
        s3_server: TuneserveServer) -> None:
    client = s3_server.client()
    rows = _rows()
    rows[3]["messages"].append({"role": "assistant", "content": "yes"})
    training = client.files.create(file=("rft.jsonl", jsonl(rows)), purpose="fine-tune")
    job = client.fine_tuning.jobs.create(model=BASE, training_file=training.id,
                                         method=_method(SAYS_YES))  # type: ignore[arg-type]
    done = wait_for(client, job.id, timeout=120)
    assert done.status == "failed" and done.error is not None
    assert done.error.param == "training_file"
    assert "Line 4" in done.error.message and "last message must be the user's" in \
        done.error.message
