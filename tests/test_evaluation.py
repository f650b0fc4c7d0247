"""The built-in evaluation's graders and example selection (the end-to-end run is in
test_fine_tuning: the shared job's `evaluation`)."""

import json

from training.evaluation import (
    Evaluation,
    eval_examples,
    grade,
    is_json_task,
    new_tokens_budget,
    summarize,
)


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
    result = Evaluation(examples=examples, json_task=True, base=["x is 1", "x is 2"],
                        fine_tuned=['{"x": 1}', '{"x": 3}'],
                        checkpoints={"ft:m:ckpt-step-2": ['{"y": 1}', "no"]})
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
