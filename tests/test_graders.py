"""OpenAI's graders: the engine (training/graders.py) on its own, then
`/v1/fine_tuning/alpha/graders/run` and `/validate` through the official client."""

import asyncio
import math
import random
import re
from typing import Any

import openai
import pytest

from tests.support.chat import wait_for_engine
from tests.support.openai_spec import assert_matches
from tests.support.server import TuneserveServer
from tests.support.training import BASE
from training.formula import MAX_CHARS
from training.graders import (
    GraderError,
    GraderResult,
    GraderTooLarge,
    JudgeError,
    JudgeRejected,
    JudgeReply,
    ScoreModelSamplingParams,
    _variables,
    parse_grader,
    run_grader,
    validate_grader,
)
from training.similarity import MAX_TOKENS


def check(input: str = "{{sample.output_text}}", reference: str = "yes",
          operation: str = "eq", name: str = "check") -> dict[str, Any]:
    return {"type": "string_check", "name": name, "input": input, "reference": reference,
            "operation": operation}


def similar(metric: str, input: str = "{{sample.output_text}}",
            reference: str = "{{item.answer}}") -> dict[str, Any]:
    return {"type": "text_similarity", "name": "similar", "input": input,
            "reference": reference, "evaluation_metric": metric}


def judged(model: str = BASE, **extra: Any) -> dict[str, Any]:
    return {"type": "score_model", "name": "judge", "model": model, "input": [
        {"role": "system", "content": "Grade the answer from 0 to 1. Reply with the number."},
        {"role": "user", "content": [{"type": "input_text", "text": "Expected: {{item.answer}}"},
                                     "Answer: {{sample.output_text}}"]}], **extra}


def multi(formula: str, **graders: dict[str, Any]) -> dict[str, Any]:
    return {"type": "multi", "name": "combined", "graders": graders, "calculate_output": formula}


def grade(grader: dict[str, Any], sample: str, item: Any = None, judge: Any = None,
          **kw: Any) -> GraderResult:
    return asyncio.run(run_grader(parse_grader(grader), sample, item, judge, **kw))


def raised(result: GraderResult) -> set[str]:
    return {k for k, v in result.metadata.errors.model_dump().items() if v is True}


class FakeJudge:
    """Answers every judge request with `text` (or raises `error`), and remembers them."""

    def __init__(self, text: str = "0.5", error: Exception | None = None,
                 refusal: str | None = None, delay: float = 0) -> None:
        self.text, self.error, self.refusal, self.delay = text, error, refusal, delay
        self.asked: list[tuple[str, list[dict[str, str]], ScoreModelSamplingParams | None]] = []

    async def __call__(self, model: str, messages: list[dict[str, str]],
                       sampling: ScoreModelSamplingParams | None) -> JudgeReply:
        self.asked.append((model, messages, sampling))
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return JudgeReply(self.text, self.refusal, prompt_tokens=20, completion_tokens=3,
                          cached_tokens=4)


# -- templates ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("template", "item", "sample", "expected"), [
    ("{{item.answer}}", {"answer": "yes"}, "", "yes"),
    ("{{ item.a.b }}", {"a": {"b": "deep"}}, "", "deep"),
    ("{{item.a.1}}", {"a": ["x", "y"]}, "", "y"),
    ("{{item.n}} and {{item.flags}}", {"n": 3, "flags": [True, None]}, "", "3 and [true, null]"),
    ("<{{sample.output_text}}>", None, "out", "<out>"),
    ("{{sample.output_json.answer.value}}", None, '{"answer": {"value": "v"}}', "v"),
    ("{{sample.output_json}}", None, '{"k": 1}', '{"k": 1}'),
    ("{ {item.answer} } {{", {"answer": "x"}, "", "{ {item.answer} } {{"),
])
def test_templates_render_items_and_samples(template: str, item: Any, sample: str,
                                            expected: str) -> None:
    result = grade(check(input=template, reference=expected), sample, item)
    assert result.reward == 1.0 and not raised(result)


def test_a_rendered_value_is_not_rendered_again() -> None:
    result = grade(check(input="{{item.a}}", reference="{{item.b}}"), "",
                   {"a": "{{item.b}}", "b": "x"})
    assert result.reward == 0.0 and not raised(result)


def test_variables_are_found_as_the_regex_of_openais_rules_finds_them() -> None:
    # The pattern the scanner replaced (it backtracks, cubically, on long inputs), on short
    # random templates of the characters that matter to it.
    pattern = re.compile(r"\{\{\s*(.*?)\s*\}\}")
    chance = random.Random(7)
    for _ in range(20_000):
        template = "".join(chance.choice("{{}} \n\ta.\u3000") for _ in range(chance.randint(0, 14)))
        expected = [(m.start(), m.end(), m.group(1)) for m in pattern.finditer(template)]
        assert list(_variables(template)) == expected, template


@pytest.mark.parametrize(("template", "item", "sample", "flag"), [
    ("{{item.missing}}", {"answer": "yes"}, "", "invalid_variable_error"),
    ("{{item.a.b.c}}", {"a": {"b": "leaf"}}, "", "invalid_variable_error"),
    ("{{item.a.5}}", {"a": ["x"]}, "", "invalid_variable_error"),
    ("{{item.answer}}", None, "", "invalid_variable_error"),
    ("{{other.answer}}", {"answer": "yes"}, "", "invalid_variable_error"),
    ("{{answer}}", {"answer": "yes"}, "", "invalid_variable_error"),
    ("{{sample.output_tokens}}", None, "yes", "invalid_variable_error"),
    ("{{sample.output_json.k}}", None, '{"other": 1}', "invalid_variable_error"),
    ("{{sample.output_json.k}}", None, "not json", "sample_parse_error"),
])
def test_unresolved_variables_are_flagged_with_no_reward(template: str, item: Any, sample: str,
                                                         flag: str) -> None:
    result = grade(check(input=template, reference=""), sample, item)
    assert raised(result) == {flag}
    assert result.reward == 0.0


# -- string_check --------------------------------------------------------------------------------


@pytest.mark.parametrize(("operation", "sample", "reference", "reward"), [
    ("eq", "Paris", "Paris", 1.0), ("eq", "Paris", "paris", 0.0),
    ("ne", "Paris", "Rome", 1.0), ("ne", "Paris", "Paris", 0.0),
    ("like", "It is Paris.", "Paris", 1.0), ("like", "It is paris.", "Paris", 0.0),
    ("ilike", "It is PARIS.", "paris", 1.0), ("ilike", "It is Rome.", "paris", 0.0),
])
def test_string_check_operations(operation: str, sample: str, reference: str,
                                 reward: float) -> None:
    result = grade(check(reference=reference, operation=operation), sample)
    assert result.reward == reward
    assert result.metadata.name == "check" and result.metadata.type == "string_check"
    assert result.sub_rewards == {} and result.metadata.token_usage is None


# -- text_similarity -----------------------------------------------------------------------------

HYPOTHESIS, REFERENCE = "the cat sat on the mat", "the cat sat on a mat"


@pytest.mark.parametrize(("metric", "sample", "reference", "expected"), [
    # 1-4-gram precisions 5/6, 3/5, 2/4, 1/3, no brevity penalty: (1/12) ** 0.25
    ("bleu", HYPOTHESIS, REFERENCE, (1 / 12) ** 0.25),
    # no bigram in common: exp smoothing counts it 1/(2*1)
    ("bleu", "the cat", "the dog", 0.5),
    ("bleu", "the cat", "the cat sat on the mat", math.exp(1 - 6 / 2)),
    ("gleu", HYPOTHESIS, REFERENCE, 11 / 18),
    ("rouge_1", HYPOTHESIS, REFERENCE, 5 / 6),
    ("rouge_2", HYPOTHESIS, REFERENCE, 3 / 5),
    ("rouge_3", HYPOTHESIS, REFERENCE, 2 / 4),
    ("rouge_4", HYPOTHESIS, REFERENCE, 1 / 3),
    ("rouge_5", HYPOTHESIS, REFERENCE, 0.0),
    ("rouge_l", HYPOTHESIS, REFERENCE, 5 / 6),
    ("rouge_l", "a b c d", "a x c y d", 2 * (3 / 4) * (3 / 5) / (3 / 4 + 3 / 5)),
    ("fuzzy_match", "kitten", "sitting", 1 - 5 / 13),
    ("fuzzy_match", "  same ", "same", 1.0),
])
def test_text_similarity_metrics(metric: str, sample: str, reference: str,
                                 expected: float) -> None:
    result = grade(similar(metric), sample, {"answer": reference})
    assert result.reward == pytest.approx(expected)


@pytest.mark.parametrize("metric", ["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2",
                                    "rouge_3", "rouge_4", "rouge_5", "rouge_l"])
def test_every_metric_spans_zero_to_one(metric: str) -> None:
    same = "one two three four five six"
    assert grade(similar(metric), same, {"answer": same}).reward == pytest.approx(1.0)
    assert grade(similar(metric), "xyz", {"answer": "abc"}).reward == 0.0
    assert grade(similar(metric), "", {"answer": "abc"}).reward == 0.0


@pytest.mark.parametrize(("metric", "words"), [
    ("fuzzy_match", 20_000), ("rouge_l", 40_000), ("bleu", MAX_TOKENS + 1)])
def test_similarity_of_texts_too_long_to_compare_cheaply_names_the_longer(
        metric: str, words: int) -> None:
    long = " ".join(f"w{i}" for i in range(words))
    with pytest.raises(GraderTooLarge) as refused:
        grade(similar(metric), long, {"answer": long[:-1]})
    assert (refused.value.param, refused.value.code) == ("grader.input", "text_too_long")
    flagged = grade(similar(metric), long, {"answer": long}, flag_too_large=True)
    assert raised(flagged) == {"other_error"} and flagged.reward == 0.0


def test_rouge_l_stays_fast_on_long_samples() -> None:
    long = " ".join(f"w{i}" for i in range(20_000))
    result = grade(similar("rouge_l"), long, {"answer": long})
    assert result.reward == 1.0 and result.metadata.execution_time < 5


# -- score_model ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("answer", "extra", "reward"), [
    ("0.8", {}, 0.8),
    ('{"steps": [{"description": "close", "conclusion": "2"}], "result": 0.3}', {}, 0.3),
    ('{"score": 1}', {}, 1.0),
    ("Score: 7 out of 10", {"range": [0, 10]}, 7.0),
    ("15", {"range": [0, 10]}, 10.0),
    ("-2", {}, 0.0),
    ("1e999", {}, 1.0),
    ('{"result": 1' + "0" * 400 + "}", {"range": [-5, 5]}, 5.0),
])
def test_score_model_parses_and_clamps_the_judges_score(answer: str, extra: dict[str, Any],
                                                        reward: float) -> None:
    judge = FakeJudge(answer)
    result = grade(judged(**extra), "Paris", {"answer": "Paris"}, judge)
    assert result.reward == reward and not raised(result)


def test_score_model_asks_the_judge_with_rendered_messages_and_counts_tokens() -> None:
    judge = FakeJudge("1")
    grader = judged(sampling_params={"temperature": 0, "max_completions_tokens": 5, "seed": 3})
    result = grade(grader, "Rome", {"answer": "Paris"}, judge)
    [(model, messages, sampling)] = judge.asked
    assert model == BASE
    assert messages == [
        {"role": "system", "content": "Grade the answer from 0 to 1. Reply with the number."},
        {"role": "user", "content": "Expected: Paris\nAnswer: Rome"}]
    assert sampling == ScoreModelSamplingParams(temperature=0, max_completions_tokens=5, seed=3)
    assert result.metadata.sampled_model_name == BASE
    assert result.metadata.token_usage == 23
    assert result.model_grader_token_usage_per_model == {BASE: {
        "prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23, "cached_tokens": 4}}


@pytest.mark.parametrize(("judge", "flag"), [
    (FakeJudge("no idea"), "model_grader_parse_error"),
    (FakeJudge(""), "model_grader_parse_error"),
    (FakeJudge("NaN"), "model_grader_parse_error"),
    # A JSON answer without a result: the numbers among its steps are not the score.
    (FakeJudge('{"steps": [{"description": "step 1"}], "result": null}'),
     "model_grader_parse_error"),
    (FakeJudge("[" * 5000), "model_grader_parse_error"),  # too deep for the JSON parser
    (FakeJudge("", refusal="I can't grade that."), "model_grader_refusal_error"),
    (FakeJudge(error=JudgeError("the engine is down")), "model_grader_server_error"),
    (FakeJudge(delay=1), "unresponsive_reward_error"),
    (None, "model_grader_server_error"),
])
def test_score_model_failures_are_flagged(judge: FakeJudge | None, flag: str) -> None:
    result = grade(judged(), "Paris", {"answer": "Paris"}, judge, judge_timeout=0.05)
    assert raised(result) == {flag} and result.reward == 0.0
    if flag == "model_grader_server_error":
        assert result.metadata.errors.model_grader_server_error_details


def test_an_answer_too_deep_to_parse_as_json_is_graded_as_text() -> None:
    deep = "[" * 5000
    result = grade(check(reference=deep), deep)
    assert result.reward == 1.0 and not raised(result)
    assert raised(grade(check(input="{{sample.output_json}}"), deep)) == {
        "sample_parse_error"}


def test_a_template_error_stops_before_the_judge_is_asked() -> None:
    judge = FakeJudge("1")
    result = grade(judged(), "Paris", {}, judge)
    assert raised(result) == {"invalid_variable_error"} and judge.asked == []


def test_a_judge_rejecting_the_model_names_the_graders_field() -> None:
    rejected = FakeJudge(error=JudgeRejected("model", "no such model", "model_not_found"))
    with pytest.raises(GraderError) as top:
        grade(judged("nope"), "Paris", {"answer": "Paris"}, rejected)
    assert (top.value.param, top.value.code) == ("grader.model", "model_not_found")
    with pytest.raises(GraderError) as nested:
        grade(multi("judge", judge=judged("nope")), "Paris", {"answer": "Paris"}, rejected)
    assert nested.value.param == "grader.graders.judge.model"


# -- multi and its formula -------------------------------------------------------------------------


@pytest.mark.parametrize(("formula", "expected"), [
    ("a + b", 1.25), ("a - b", 0.75), ("a * b", 0.25), ("a / b", 4.0), ("b ** 2", 0.0625),
    ("-b", -0.25), ("(a + b) / 2", 0.625), ("0.3 * a + 0.7 * b", 0.475), ("min(a, b)", 0.25),
    ("max(a, b, 2)", 2.0), ("abs(b - a)", 0.75), ("floor(b + 0.8)", 1.0), ("ceil(b)", 1.0),
    ("exp(0)", 1.0), ("sqrt(b)", 0.5), ("log(exp(b))", 0.25), ("  a  ", 1.0), ("2", 2.0),
    ("max(a)", 1.0), ("min(b)", 0.25),
])
def test_formulas_combine_the_named_scores(formula: str, expected: float) -> None:
    grader = multi(formula, a=check(), b=judged())
    result = grade(grader, "yes", {"answer": "yes"}, FakeJudge("0.25"))
    assert result.sub_rewards == {"a": 1.0, "b": 0.25}
    assert result.metadata.scores == result.sub_rewards
    assert result.reward == pytest.approx(expected) and not raised(result)
    assert validate_grader(grader).calculate_output == formula


REJECTED_FORMULAS = [
    "a < b", "a if b else 1", "a // b", "a % b", "+a", "not a", "a and b", "__import__('os')",
    "a.real", "[a][0]", "{a}", "'a'", "True", "1j", "None", "pow(a, 2)", "math.sqrt(a)",
    "min()", "abs(a, b)", "sqrt()", "log(a, 2)", "max(*[a, b])", "round(a, 1)",
    "exp(x=a)", "(c := 1)", "lambda: 1", "[x for x in (a, b)]", "f'{a}'", "c", "a +", "", "a b",
    "(" * 300 + "a" + ")" * 300, "+".join(["a"] * (MAX_CHARS // 2 + 1)),
    "-" * 900 + "a",  # short enough, too deep to walk
]


@pytest.mark.parametrize("formula", REJECTED_FORMULAS)
def test_formulas_outside_arithmetic_are_refused(formula: str) -> None:
    grader = multi(formula, a=check(), b=check(name="b"))
    with pytest.raises(GraderError) as refused:
        validate_grader(grader)
    assert refused.value.param == "grader.calculate_output"
    result = grade(grader, "yes")
    assert raised(result) == {"formula_parse_error"} and result.reward == 0.0
    assert result.sub_rewards == {"a": 1.0, "b": 1.0}


@pytest.mark.parametrize("formula", ["a / (a - a)", "log(a - a)", "sqrt(-a)", "exp(1000)",
                                     "10 ** 400", "(-a) ** 0.5", "1e308 * 10"])
def test_formulas_without_a_value_are_other_errors(formula: str) -> None:
    result = grade(multi(formula, a=check()), "yes")
    assert raised(result) == {"other_error"} and result.reward == 0.0


def test_a_failed_sub_grader_fails_the_multi_grader() -> None:
    judge = FakeJudge("0.9")
    grader = multi("a + j", a=check(input="{{item.nope}}"), j=judged())
    result = grade(grader, "Paris", {"answer": "Paris"}, judge)
    assert raised(result) == {"invalid_variable_error"} and result.reward == 0.0
    assert result.sub_rewards == {"a": 0.0, "j": 0.9}
    assert result.metadata.sampled_model_name == BASE and result.metadata.token_usage == 23


def test_multi_judges_are_asked_at_once() -> None:
    judge = FakeJudge("1", delay=0.3)
    grader = multi("(x + y + z) / 3", x=judged(), y=judged(), z=judged())
    result = grade(grader, "Paris", {"answer": "Paris"}, judge)
    assert result.reward == 1.0 and len(judge.asked) == 3
    assert result.metadata.execution_time < 0.8
    assert result.model_grader_token_usage_per_model[BASE]["total_tokens"] == 69


# -- validation ----------------------------------------------------------------------------------

VALID = [check(), similar("gleu"), judged(range=[0, 5], sampling_params={"top_p": 0.5}),
         multi("0.5 * a + 0.5 * b", a=check(operation="ilike"), b=judged()),
         {**judged(), "input": [{"role": "developer", "content": {"type": "output_text",
                                                                  "text": "x"},
                                 "type": "message"}]}]


@pytest.mark.parametrize("grader", VALID)
def test_valid_graders_come_back_as_sent(grader: dict[str, Any]) -> None:
    assert validate_grader(grader).model_dump(exclude_none=True) == grader


def _without(grader: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in grader.items() if k != key}


@pytest.mark.parametrize(("grader", "param", "code"), [
    ({"type": "python", "name": "p", "source": "def grade(s, i): return 1"}, "grader.type",
     "unsupported_grader"),
    ({"type": "label_model", "name": "l"}, "grader.type", "unsupported_grader"),
    (multi("l", l={"type": "label_model"}), "grader.graders.l.type", "unsupported_grader"),
    (multi("p", p={"type": "python"}), "grader.graders.p.type", "unsupported_grader"),
    (multi("m", m=multi("a", a=check())), "grader.graders.m.type", "invalid_value"),
    ({"type": "regex", "name": "r"}, "grader.type", "invalid_value"),
    (_without(check(), "type"), "grader.type", "missing_required_parameter"),
    (similar("meteor"), "grader.evaluation_metric", "unsupported_metric"),
    (similar("cosine"), "grader.evaluation_metric", "unsupported_metric"),
    (similar("jaccard"), "grader.evaluation_metric", "invalid_value"),
    (check(operation="regex"), "grader.operation", "invalid_value"),
    (multi("accuracy", accuracy=check(operation="glob")), "grader.graders.accuracy.operation",
     "invalid_value"),
    (_without(check(), "reference"), "grader.reference", "missing_required_parameter"),
    (_without(judged(), "model"), "grader.model", "missing_required_parameter"),
    (multi("a", a=_without(similar("bleu"), "input")), "grader.graders.a.input",
     "missing_required_parameter"),
    (_without(multi("a", a=check()), "calculate_output"), "grader.calculate_output",
     "missing_required_parameter"),
    ({**check(), "pass_threshold": 0.5}, "grader.pass_threshold", "unknown_parameter"),
    (judged(range=[1, 0]), "grader.range", "invalid_value"),
    (judged(range=[0, 1, 2]), "grader.range", "invalid_value"),
    (judged(range=[float("-inf"), 1]), "grader.range[0]", "invalid_value"),
    (judged(model=""), "grader.model", "invalid_value"),
    (judged(sampling_params={"temperature": 3}), "grader.sampling_params.temperature",
     "invalid_value"),
    (judged(sampling_params={"seed": 2**63}), "grader.sampling_params.seed", "invalid_value"),
    (judged(sampling_params={"max_completions_tokens": 0}),
     "grader.sampling_params.max_completions_tokens", "invalid_value"),
    ({**judged(), "input": []}, "grader.input", "invalid_value"),
    ({**judged(), "input": [{"role": "tool", "content": "x"}]}, "grader.input[0].role",
     "invalid_value"),
    ({**judged(), "input": [{"role": "user", "content": [{"type": "input_text"}]}]},
     "grader.input[0].content[0].text", "missing_required_parameter"),
    ({**judged(), "input": [{"role": "user", "content": [
        "x", {"type": "input_image", "image_url": "https://example.com/a.png"}]}]},
     "grader.input[0].content[1].type", "unsupported_content"),
    ({**judged(), "input": [{"role": "user", "content": {"type": "input_audio"}}]},
     "grader.input[0].content.type", "unsupported_content"),
    (multi("a", **check(name="a")), "grader.graders", "invalid_value"),
    (multi("a"), "grader.graders", "invalid_value"),
    ({**multi("a"), "graders": [check()]}, "grader.graders", "invalid_value"),
    (multi("a", a="string_check"), "grader.graders.a", "invalid_type"),
    ("string_check", "grader", "invalid_type"),
])
def test_invalid_graders_name_the_field(grader: Any, param: str, code: str) -> None:
    with pytest.raises(GraderError) as refused:
        validate_grader(grader)
    assert (refused.value.param, refused.value.code) == (param, code), refused.value.message


def test_python_graders_are_refused_with_the_reason() -> None:
    with pytest.raises(GraderError, match="python graders are not supported by this server"):
        parse_grader({"type": "python", "name": "p", "source": "x"})


# -- the API, through the official client -----------------------------------------------------


@pytest.fixture(scope="module")
def client(s3_server: TuneserveServer) -> openai.OpenAI:
    return s3_server.client()


def test_run_answers_as_openai_does(client: openai.OpenAI, s3_server: TuneserveServer) -> None:
    grader = multi("0.5 * exact + 0.5 * close", exact=check(reference="{{item.answer}}"),
                   close=similar("fuzzy_match"))
    run = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="Paris",
                                               item={"answer": "Paris"})
    assert run.reward == 1.0 and run.sub_rewards == {"exact": 1.0, "close": 1.0}
    assert run.metadata.name == "combined" and run.metadata.type == "multi"
    assert not run.metadata.errors.invalid_variable_error and run.metadata.execution_time >= 0
    assert run.api_model_grader_token_usage_per_model == {}
    with s3_server.http() as http:
        raw = http.post("/fine_tuning/alpha/graders/run", json={
            "grader": check(), "model_sample": "yes"})
    assert raw.status_code == 200
    assert_matches("RunGraderResponse", raw.json())
    assert raw.json()["reward"] == 1.0


def test_run_reports_grading_errors_in_its_flags(client: openai.OpenAI) -> None:
    run = client.fine_tuning.alpha.graders.run(
        grader=similar("rouge_l", reference="{{item.missing}}"), model_sample="x", item={})
    assert run.reward == 0.0 and run.metadata.errors.invalid_variable_error
    bad_formula = client.fine_tuning.alpha.graders.run(
        grader=multi("open('x')", a=check()), model_sample="yes")
    assert bad_formula.metadata.errors.formula_parse_error
    assert bad_formula.sub_rewards == {"a": 1.0}


def test_score_model_without_serving_is_a_server_error_flag(client: openai.OpenAI) -> None:
    run = client.fine_tuning.alpha.graders.run(grader=judged(), model_sample="Paris",
                                               item={"answer": "Paris"})
    assert run.reward == 0.0 and run.metadata.errors.api_model_grader_server_error
    assert "Serving is turned off" in (run.metadata.errors.api_model_grader_server_error_details
                                       or "")


def test_validate_echoes_the_grader(client: openai.OpenAI, s3_server: TuneserveServer) -> None:
    for grader in VALID:
        # The client types a multi grader's `graders` as one grader (it warns); OpenAI's
        # guide, and its API, take a map of names to graders.
        answer = client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
        assert answer.to_dict(warnings=False) == {"grader": grader}
    with s3_server.http() as http:
        raw = http.post("/fine_tuning/alpha/graders/validate", json={"grader": judged()})
    assert_matches("ValidateGraderResponse", raw.json())


@pytest.mark.parametrize(("grader", "param"), [
    ({"type": "python", "name": "p", "source": "def grade(sample, item): return 1.0"},
     "grader.type"),
    (similar("meteor"), "grader.evaluation_metric"),
    (multi("a ; b", a=check()), "grader.calculate_output"),
    (multi("accuracy", accuracy=check(operation="regex")), "grader.graders.accuracy.operation"),
    (_without(check(), "input"), "grader.input"),
    ({"name": "no type"}, "grader.type"),
])
def test_bad_graders_are_400s_naming_the_field(client: openai.OpenAI, grader: dict[str, Any],
                                               param: str) -> None:
    with pytest.raises(openai.BadRequestError) as refused:
        client.fine_tuning.alpha.graders.validate(grader=grader)  # type: ignore[arg-type]
    assert refused.value.param == param and refused.value.type == "invalid_request_error"
    if param != "grader.calculate_output":  # /run reports a formula in its flags
        with pytest.raises(openai.BadRequestError) as run_refused:
            client.fine_tuning.alpha.graders.run(grader=grader,  # type: ignore[arg-type]
                                                 model_sample="x")
        assert run_refused.value.param == param


def test_python_graders_say_why_they_are_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError,
                       match="python graders are not supported by this server"):
        client.fine_tuning.alpha.graders.run(
            grader={"type": "python", "name": "p", "source": "def grade(s, i): return 1"},
            model_sample="x")


def test_missing_request_fields_are_400s(s3_server: TuneserveServer) -> None:
    with s3_server.http() as http:
        no_sample = http.post("/fine_tuning/alpha/graders/run", json={"grader": check()})
        no_grader = http.post("/fine_tuning/alpha/graders/validate", json={})
        unauthorized = http.post("/fine_tuning/alpha/graders/validate",
                                 json={"grader": check()}, headers={"authorization": "Bearer x"})
    assert no_sample.status_code == 400 and no_sample.json()["error"]["param"] == "model_sample"
    assert no_grader.status_code == 400 and no_grader.json()["error"]["param"] == "grader"
    assert unauthorized.status_code == 401


def test_score_model_judged_by_the_served_base_model(local_server: TuneserveServer) -> None:
    wait_for_engine(local_server)
    client = local_server.client()
    grader = judged(sampling_params={"temperature": 0, "max_completions_tokens": 3})
    run = client.fine_tuning.alpha.graders.run(grader=grader, model_sample="Paris",
                                               item={"answer": "Paris"})
    errors = run.metadata.errors
    assert not errors.api_model_grader_server_error, errors.api_model_grader_server_error_details
    assert run.metadata.sampled_model_name == BASE and (run.metadata.token_usage or 0) > 0
    usage = run.api_model_grader_token_usage_per_model[BASE]
    assert 0 < usage["completion_tokens"] <= 3  # type: ignore[index]
    # SmolLM2 may not answer a number in 3 tokens: then that is the flag, with no reward.
    assert 0.0 <= run.reward <= 1.0
    with pytest.raises(openai.BadRequestError) as unknown:
        client.fine_tuning.alpha.graders.run(
            grader=multi("j", j=judged("ft:nobody:no-such-model")), model_sample="x",
            item={"answer": "x"})
    assert unknown.value.param == "grader.graders.j.model"
    assert unknown.value.code == "model_not_found"
