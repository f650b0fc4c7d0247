"""The built-in evaluation's graders and example selection (the end-to-end run is in
test_fine_tuning: the shared job's `evaluation`)."""

import asyncio
import json

import pytest

from training.evaluation import (
    Evaluation,
    answer_tokens,
    eval_examples,
    grade,
    grader_scorer,
    headline,
    is_json_task,
    new_tokens_budget,
    reference_scores,
    summarize,
)
from training.graders import JudgeReply, ScoreModelSamplingParams


def sft(question: str, answer: str) -> dict[str, object]:
    return {"messages": [{"role": "system", "content": "Answer in JSON."},
                         {"role": "user", "content": question},
                         {"role": "assistant", "content": answer, "weight": 1}]}


def test_examples_take_the_last_assistant_message_as_the_expected_answer() -> None:
    records = [sft("2+2?", '{"a": 4}'),
               {"messages": [{"role": "user", "content": "no answer here"}]},
               sft("3+3?", '{"a": 6}'), sft("4+4?", '{"a": 8}')]
    examples = eval_examples("supervised", records, limit=2)
    assert [e.expected for e in examples] == ['{"a": 4}', '{"a": 6}']
    assert [m["role"] for m in examples[0].prompt] == ["system", "user"]
    assert all("weight" not in m for e in examples for m in e.prompt)
    dpo = {"input": {"messages": [{"role": "user", "content": "hi"}]},
           "preferred_output": [{"role": "assistant", "content": "hello"}],
           "non_preferred_output": [{"role": "assistant", "content": "go away"}]}
    (example,) = eval_examples("dpo", [dpo], limit=5)
    assert (example.prompt, example.expected) == (dpo["input"]["messages"], "hello")
    assert example.rejected == "go away"
    # A pair whose rejected answer is no text has nothing to compare with.
    no_text = {**dpo, "non_preferred_output": [{"role": "assistant", "content": None}]}
    assert eval_examples("dpo", [no_text], limit=5) == []


def test_pairs_report_how_often_and_how_much_the_preferred_answer_is_preferred() -> None:
    dpo = {"input": {"messages": [{"role": "user", "content": "hi"}]},
           "preferred_output": [{"role": "assistant", "content": "hello"}],
           "non_preferred_output": [{"role": "assistant", "content": "go away"}]}
    examples = eval_examples("dpo", [dpo, dpo], limit=5)
    result = asyncio.run(Evaluation(
        examples=examples, base=["go", "go"], fine_tuned=["hello", "go"], checkpoints={},
        margins={"base": [-1.5, 0.5], "fine_tuned": [2.0, 1.0]}).grade(reference_scores))
    summary = result.summary({}, "engine")
    assert (summary["base"]["preference_accuracy"], summary["base"]["preference_margin"]) == (
        0.5, -0.5)
    assert summary["fine_tuned"]["preference_accuracy"] == 1.0
    assert headline(summary).startswith(
        "Evaluation on 2 validation pairs: preference accuracy 0.50 -> 1.00, mean margin "
        "-0.50 -> 1.50, exact match 0.00 -> 0.50")


def test_graders_score_exact_fuzzy_and_json_answers() -> None:
    assert grade("Paris", " Paris\n", json_task=False) == {"exact_match": 1.0,
                                                           "text_similarity": 1.0}
    near = grade("the cat sat", "the cat sits", json_task=False)
    assert near["exact_match"] == 0.0 and 0.7 < near["text_similarity"] < 1.0
    scores = grade('{"label": "spam", "score": 1}', '{"label": "ham", "score": 0}', True)
    assert (scores["exact_match"], scores["json_valid"], scores["json_same_keys"]) == (0, 1, 1)
    assert grade('{"label": "spam"}', "label: spam", True)["json_valid"] == 0.0
    assert grade('{"label": "spam"}', '{"kind": "spam"}', True)["json_same_keys"] == 0.0


def test_json_rates_only_where_every_expected_answer_is_an_object() -> None:
    records = [sft("a", '{"x": 1}'), sft("b", '{"x": 2}')]
    assert is_json_task(eval_examples("supervised", records, 10))
    assert not is_json_task(eval_examples("supervised", records + [sft("c", "plain")], 10))
    assert not is_json_task(eval_examples("supervised", [sft("d", "[1, 2]")], 10))


def test_summary_and_result_file_compare_base_and_fine_tuned() -> None:
    examples = eval_examples("supervised", [sft("a", '{"x": 1}'), sft("b", '{"x": 2}')], 10)
    result = asyncio.run(Evaluation(
        examples=examples, base=["x is 1", "x is 2"], fine_tuned=['{"x": 1}', '{"x": 3}'],
        checkpoints={"ft:m:ckpt-step-2": ['{"y": 1}', "no"]}).grade(reference_scores))
    summary = result.summary({"ft:m:ckpt-step-2": 2}, "worker")
    assert (summary["n_examples"], summary["generated_by"]) == (2, "worker")
    assert summary["base"] == {"exact_match": 0.0, "text_similarity": summary["base"][
        "text_similarity"], "json_valid": 0.0, "json_same_keys": 0.0}
    assert (summary["fine_tuned"]["exact_match"], summary["fine_tuned"]["json_same_keys"]) == (
        0.5, 1.0)
    (checkpoint,) = summary["checkpoints"]
    assert checkpoint["step_number"] == 2 and checkpoint["json_valid"] == 0.5
    lines = [json.loads(line) for line in result.jsonl().decode().splitlines()]
    assert [line["fine_tuned_output"] for line in lines] == ['{"x": 1}', '{"x": 3}']
    assert lines[0]["expected"] == '{"x": 1}' and lines[0]["base_scores"]["exact_match"] == 0.0
    assert summarize([]) == {}


def test_answers_get_room_for_the_longest_expected_answer() -> None:
    examples = eval_examples("supervised", [sft("a", "x " * 40), sft("b", "y")], 10)
    assert new_tokens_budget(examples, lambda text: len(text.split())) == 68
    assert new_tokens_budget(examples[1:], lambda text: len(text.split())) == 16


def rft(question: str, answer: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": question, "weight": 1}],
            "answer": answer}


SAYS = {"type": "string_check", "name": "says", "operation": "ilike",
        "input": "{{sample.output_text}}", "reference": "{{item.answer}}"}


def test_reinforcement_prompts_are_scored_by_the_job_s_grader() -> None:
    records = [rft("Is fire hot?", "yes"), rft("Is ice hot?", "no"), rft("Sky blue?", "yes")]
    examples = eval_examples("reinforcement", records, limit=2)
    # Every row is a prompt (no reference answer), the row itself the grader's item.
    assert [e.item for e in examples] == records[:2]
    assert examples[0].prompt == [{"role": "user", "content": "Is fire hot?"}]
    result = asyncio.run(Evaluation(
        examples=examples, base=["No.", "No."], fine_tuned=["Yes, it is.", "No."],
        checkpoints={}).grade(grader_scorer(SAYS, None, 5.0)))
    summary = result.summary({}, "engine")
    assert summary["base"] == {"reward": 0.5, "passed": 0.5}
    assert summary["fine_tuned"] == {"reward": 1.0, "passed": 1.0}
    assert headline(summary) == ("Evaluation on 2 validation prompts: mean reward 0.50 -> "
                                 "1.00, pass rate 0.50 -> 1.00")
    (line, _) = [json.loads(x) for x in result.jsonl().decode().splitlines()]
    assert line["item"] == records[0] and "expected" not in line
    assert line["fine_tuned_scores"] == {"reward": 1.0, "passed": 1.0}


def test_a_multi_grader_reports_each_named_grader_and_a_judge_s_range_sets_the_pass() -> None:
    async def judge(model: str, messages: list[dict[str, str]],
                    sampling: ScoreModelSamplingParams | None) -> JudgeReply:
        return JudgeReply(text="6" if "Yes" in messages[-1]["content"] else "2")

    judged = {"type": "score_model", "name": "judged", "model": "m", "range": [0, 10],
              "input": [{"role": "user", "content": "{{sample.output_text}}"}]}
    mix = {"type": "multi", "name": "mix", "graders": {"judged": judged, "says": SAYS},
           "calculate_output": "judged / 10"}
    examples = eval_examples("reinforcement", [rft("Fire hot?", "yes")], 5)
    (yes,) = asyncio.run(grader_scorer(mix, judge, 5.0)(examples, ["Yes"]))
    assert yes == {"reward": 0.6, "passed": 1.0, "reward_judged": 6.0, "reward_says": 1.0}
    # A score_model grader alone passes from the middle of its range (5 of 0..10).
    score = grader_scorer(judged, judge, 5.0)
    assert [s["passed"] for s in asyncio.run(score(examples * 2, ["Yes", "No"]))] == [1, 0]


@pytest.mark.parametrize(("method", "tokens"), [
    ({"type": "reinforcement", "reinforcement": {"hyperparameters": {
        "max_completion_tokens": 24}}}, 24),
    ({"type": "reinforcement", "reinforcement": {"hyperparameters": {}}}, 128),
    ({"type": "supervised", "supervised": {"hyperparameters": {}}}, None)])
def test_reinforcement_answers_are_as_long_as_the_job_trained_them(
        method: dict[str, object], tokens: int | None) -> None:
    assert answer_tokens(method) == tokens
    examples = eval_examples("supervised", [sft("a", "x " * 40)], 10)
    assert new_tokens_budget(examples, lambda t: len(t.split()), tokens) == (tokens or 68)
