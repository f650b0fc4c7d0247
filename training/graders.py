"""OpenAI's graders as one engine: the grader objects as OpenAI defines them, their validation
(naming the offending field), and the grading of one model sample against one dataset item.

The API's `/v1/fine_tuning/alpha/graders` routes run it, and so do reinforcement fine-tuning's
reward functions (training/rewards.py), so a grader scores alike in both places; the judge of
a score_model grader is the API's engine there (api/fine_tuning/alpha/graders/judge.py) and
the API over HTTP here (training/judge.py).

Supported: `string_check`, `text_similarity` (every metric but `meteor` and `cosine`, which
need a model this server does not have), `score_model` (the judge is a model this server
serves, asked through an injected `Judge`) and `multi` over those. `python` (no sandbox to
run its code in) and `label_model` are refused with a `GraderError`.

Templates, as OpenAI's graders guide writes them: `{{item.field}}` (nested: `{{item.a.b}}`,
list indices `{{item.a.0}}`), `{{sample.output_text}}` and, when the sample is valid JSON,
`{{sample.output_json.field}}`. What a template cannot resolve is reported in the result's
error flags (the reward is then 0), as OpenAI reports it.

The work of one grading is bounded, whatever its grader, item and sample: templates render
at most `MAX_RENDERED_CHARS` in all (checked as values are put in, before the text is
built), in linear time, and off the event loop with the comparisons; fuzzy_match and
rouge_l compare texts of a bounded size (training/similarity.py); the formula is short and
shallow (training/formula.py). A grading past a bound is a `GraderTooLarge` naming the
field; the reward functions of reinforcement fine-tuning flag that sample instead."""

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, FiniteFloat, ValidationError, field_validator

from training.formula import FormulaError, parse_formula
from training.similarity import TextsTooLong, similarity

# A judge that has not answered by then is taken as unresponsive.
JUDGE_TIMEOUT_SECONDS = 120.0
# Characters one grading may render, over all templates of its graders together. A template
# repeats values: without a cap, "{{item.a}}" * 70000 over a 300 KB `item.a` (a 1 MiB
# request) renders 20 GiB and the API node is killed for its memory. 4 Mi characters (16 MiB
# at most as a Python string) take a sample, a reference and a judge's prompt of documents
# far past what a judge's context window holds.
MAX_RENDERED_CHARS = 4 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StringCheckGrader(_Strict):
    type: Literal["string_check"]
    name: str
    input: str
    reference: str
    operation: Literal["eq", "ne", "like", "ilike"]


class TextSimilarityGrader(_Strict):
    type: Literal["text_similarity"]
    name: str
    input: str
    reference: str
    evaluation_metric: Literal["fuzzy_match", "bleu", "gleu", "rouge_1", "rouge_2", "rouge_3",
                               "rouge_4", "rouge_5", "rouge_l"]


class InputText(_Strict):
    type: Literal["input_text"]
    text: str


class OutputText(_Strict):
    type: Literal["output_text"]
    text: str


TextPart = Annotated[InputText | OutputText, Field(discriminator="type")]


class GraderMessage(_Strict):
    role: Literal["user", "assistant", "system", "developer"]
    content: str | TextPart | list[str | TextPart]
    type: Literal["message"] | None = None

    def text(self) -> str:
        parts = self.content if isinstance(self.content, list) else [self.content]
        return "\n".join(p if isinstance(p, str) else p.text for p in parts)


class ScoreModelSamplingParams(_Strict):
    max_completions_tokens: Annotated[int, Field(ge=1)] | None = None
    # Accepted so OpenAI graders run unchanged; the models served here do not reason.
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh",
                              "max"] | None = None
    seed: Annotated[int, Field(ge=-(2**63), le=2**63 - 1)] | None = None  # vLLM's int64
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None


class ScoreModelGrader(_Strict):
    type: Literal["score_model"]
    name: str
    model: str = Field(min_length=1)
    input: list[GraderMessage] = Field(min_length=1)
    range: list[FiniteFloat] | None = None
    sampling_params: ScoreModelSamplingParams | None = None

    @field_validator("range")
    @classmethod
    def _two_bounds(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or value[0] >= value[1]):
            raise ValueError("two numbers are needed, the lower bound first")
        return value

    def bounds(self) -> tuple[float, float]:
        low, high = self.range or (0.0, 1.0)
        return low, high


SubGrader = Annotated[StringCheckGrader | TextSimilarityGrader | ScoreModelGrader,
                      Field(discriminator="type")]


class MultiGrader(_Strict):
    type: Literal["multi"]
    name: str
    graders: dict[str, SubGrader] = Field(min_length=1)
    calculate_output: str


AnyGrader = StringCheckGrader | TextSimilarityGrader | ScoreModelGrader | MultiGrader
Grader = Annotated[AnyGrader, Field(discriminator="type")]

_MODELS: dict[str, type[AnyGrader]] = {
    "string_check": StringCheckGrader, "text_similarity": TextSimilarityGrader,
    "score_model": ScoreModelGrader, "multi": MultiGrader,
}
_REFUSED = {
    "python": "python graders are not supported by this server: it has no sandbox to run "
              "their code in.",
    "label_model": "label_model graders are not supported by this server; a score_model "
                   "grader can judge with a model it serves.",
}
_UNSUPPORTED_METRICS = ("meteor", "cosine")


class GraderError(ValueError):
    """A grader object this server cannot run; `param` names the offending field."""

    def __init__(self, param: str, message: str, code: str = "invalid_value") -> None:
        super().__init__(message)
        self.param, self.message, self.code = param, message, code


class GraderTooLarge(GraderError):
    """A grading past one of its bounds (a template rendering past `MAX_RENDERED_CHARS`,
    texts too long to compare): `param` names the field. The API answers it with a 400; in
    reinforcement fine-tuning it is that sample's `other_error`, as the item is the row's."""


def parse_grader(data: Any, param: str = "grader") -> AnyGrader:
    """The grader object as a model, or a GraderError naming the field it cannot take. A multi
    grader's formula is checked where it runs (`run_grader` flags it) or by
    `validate_grader`."""
    return _parse(data, param, nested=False)


def validate_grader(data: Any, param: str = "grader") -> AnyGrader:
    """`parse_grader`, and a multi grader's formula too: everything that can be known about a
    grader before it runs."""
    grader = parse_grader(data, param)
    if isinstance(grader, MultiGrader):
        try:
            parse_formula(grader.calculate_output, grader.graders)
        except FormulaError as exc:
            where = f"{param}.calculate_output"
            raise GraderError(where, f"Invalid value for '{where}': {exc}.") from None
    return grader


def _parse(data: Any, param: str, nested: bool) -> AnyGrader:
    if not isinstance(data, dict):
        raise GraderError(param, f"Invalid type for '{param}': expected a grader object.",
                          "invalid_type")
    if "type" not in data:
        raise GraderError(f"{param}.type", f"Missing required parameter: '{param}.type'.",
                          "missing_required_parameter")
    kind = data["type"]
    if isinstance(kind, str) and kind in _REFUSED:
        raise GraderError(f"{param}.type", _REFUSED[kind], "unsupported_grader")
    if kind == "multi" and nested:
        raise GraderError(f"{param}.type", "A multi grader's graders cannot be multi graders.")
    model = _MODELS.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise GraderError(f"{param}.type", f"Invalid value for '{param}.type': one of "
                          f"{', '.join(_MODELS)}.")
    metric = data.get("evaluation_metric")
    if kind == "text_similarity" and metric in _UNSUPPORTED_METRICS:
        raise GraderError(f"{param}.evaluation_metric", f"The '{metric}' metric is not "
                          "supported by this server: it needs an embedding model it does not "
                          "have.", "unsupported_metric")
    if kind == "score_model":
        _text_only(data.get("input"), f"{param}.input")
    if kind == "multi" and isinstance(data.get("graders"), dict):
        data = {**data, "graders": _sub_graders(data["graders"], f"{param}.graders")}
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise _field_error(exc, param) from None


def _sub_graders(graders: dict[str, Any], param: str) -> dict[str, AnyGrader]:
    if isinstance(graders.get("type"), str):
        raise GraderError(param, f"'{param}' maps names to graders, e.g. {{\"accuracy\": "
                          "{\"type\": \"string_check\", ...}}; calculate_output uses the names.")
    return {name: _parse(sub, f"{param}.{name}", nested=True) for name, sub in graders.items()}


def _text_only(messages: Any, param: str) -> None:
    """The judges here read text: image and audio parts are refused by name."""
    for i, message in enumerate(messages if isinstance(messages, list) else []):
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [content]
        for j, part in enumerate(parts):
            if isinstance(part, dict) and part.get("type") in ("input_image", "input_audio"):
                where = f"{param}[{i}].content" + (f"[{j}]" if parts is content else "")
                raise GraderError(f"{where}.type", f"{part['type']} content is not supported "
                                  "by this server: its judges read text only.",
                                  "unsupported_content")


# Segments pydantic adds to an error's location for union members; not field names.
_UNION_LABELS = {"str", "input_text", "output_text"}
# A union member's plain type mismatch says least about what is wrong.
_VAGUE = {"string_type", "literal_error"}


def _field_error(exc: ValidationError, param: str) -> GraderError:
    errors = exc.errors()
    first = max(errors, key=lambda e: (len(e["loc"]), e["type"] not in _VAGUE))
    where = param + "".join(
        f"[{p}]" if isinstance(p, int) else f".{p}" for p in first["loc"]
        if isinstance(p, int) or (p not in _UNION_LABELS and "[" not in p))
    if first["type"] == "missing":
        return GraderError(where, f"Missing required parameter: '{where}'.",
                           "missing_required_parameter")
    if first["type"] == "extra_forbidden":
        return GraderError(where, f"Unrecognized request argument supplied: {where}",
                           "unknown_parameter")
    message = str(first["ctx"]["error"]) if first["type"] == "value_error" else first["msg"]
    return GraderError(where, f"Invalid value for '{where}': {message}.")


# -- running ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class JudgeReply:
    text: str
    refusal: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0


# (model, chat messages, the grader's sampling parameters) -> the judge's answer
Judge = Callable[[str, list[dict[str, str]], ScoreModelSamplingParams | None],
                 Awaitable[JudgeReply]]


def judge_request(messages: list[dict[str, str]],
                  sampling: ScoreModelSamplingParams | None) -> dict[str, Any]:
    """The chat completion request that asks a judge (without the model)."""
    payload: dict[str, Any] = {"messages": messages}
    if sampling is not None:
        wanted = {"max_tokens": sampling.max_completions_tokens, "seed": sampling.seed,
                  "temperature": sampling.temperature, "top_p": sampling.top_p}
        payload |= {k: v for k, v in wanted.items() if v is not None}
    return payload


def judge_reply(status: int, body: Any) -> JudgeReply:
    """The judge's answer from a chat completion response; a JudgeError for an error."""
    body = body if isinstance(body, dict) else {}
    if status != 200:
        error = body.get("error")
        message = error.get("message") if isinstance(error, dict) else None
        raise JudgeError(message or f"The model server answered {status}.")
    message = (body.get("choices") or [{}])[0].get("message") or {}
    usage = body.get("usage") or {}
    cached = (usage.get("prompt_tokens_details") or {}).get("cached_tokens")
    return JudgeReply(text=str(message.get("content") or ""), refusal=message.get("refusal"),
                      prompt_tokens=usage.get("prompt_tokens") or 0,
                      completion_tokens=usage.get("completion_tokens") or 0,
                      cached_tokens=cached or 0)


def needs_judge(grader: AnyGrader) -> bool:
    parts = grader.graders.values() if isinstance(grader, MultiGrader) else [grader]
    return any(isinstance(part, ScoreModelGrader) for part in parts)


def judge_models(grader: AnyGrader, param: str) -> list[tuple[str, str]]:
    """(the judge's model, the field naming it) of each score_model grader in `grader`."""
    if isinstance(grader, ScoreModelGrader):
        return [(grader.model, f"{param}.model")]
    if isinstance(grader, MultiGrader):
        return [(g.model, f"{param}.graders.{name}.model")
                for name, g in grader.graders.items() if isinstance(g, ScoreModelGrader)]
    return []


class JudgeError(Exception):
    """The judge's model server could not answer: reported in the result, as OpenAI does."""


class JudgeRejected(Exception):
    """The judge refused the grader's request for the client's fault (no such model, say):
    `field` names the score_model grader's field, for the GraderError it becomes."""

    def __init__(self, field: str, message: str, code: str) -> None:
        super().__init__(message)
        self.field, self.code = field, code


class GraderErrors(BaseModel):
    formula_parse_error: bool = False
    invalid_variable_error: bool = False
    model_grader_parse_error: bool = False
    model_grader_refusal_error: bool = False
    model_grader_server_error: bool = False
    model_grader_server_error_details: str | None = None
    other_error: bool = False
    # python graders are refused, so these stay false; they are in OpenAI's shape.
    python_grader_runtime_error: bool = False
    python_grader_runtime_error_details: str | None = None
    python_grader_server_error: bool = False
    python_grader_server_error_type: str | None = None
    sample_parse_error: bool = False
    # Samples here are whole strings, never cut short.
    truncated_observation_error: bool = False
    unresponsive_reward_error: bool = False

    def raised(self) -> bool:
        return any(v is True for v in self.__dict__.values())


class GraderMetadata(BaseModel):
    name: str
    type: str
    errors: GraderErrors
    execution_time: float
    scores: dict[str, Any]
    token_usage: int | None
    sampled_model_name: str | None


class GraderResult(BaseModel):
    reward: float
    metadata: GraderMetadata
    sub_rewards: dict[str, Any]
    model_grader_token_usage_per_model: dict[str, Any]


class _Failed(Exception):
    """Grading stopped on one of the result's error flags."""

    def __init__(self, flag: str, details: str | None = None) -> None:
        super().__init__(flag)
        self.flag, self.details = flag, details


@dataclass
class _Run:
    namespaces: dict[str, Any]
    judge: Judge | None
    judge_timeout: float
    errors: GraderErrors = field(default_factory=GraderErrors)
    usage: dict[str, dict[str, int]] = field(default_factory=dict)
    # Characters rendered so far by each template's field, for a multi grader's graders
    # together (rendering in threads at once).
    rendered: dict[str, int] = field(default_factory=dict)
    rendered_in_all: int = 0
    _rendering: threading.Lock = field(default_factory=threading.Lock)
    # A grading past its bounds is flagged (`other_error`) rather than raised.
    flag_too_large: bool = False

    def render(self, template: str, param: str) -> str:
        """The template with its variables' values put in. Past `MAX_RENDERED_CHARS` for the
        grading, a GraderTooLarge, before the text is built."""
        parts: list[str] = []
        end = 0
        for start, stop, variable in _variables(template):
            value = _as_text(self._lookup(variable))
            parts += (template[end:start], value)
            self._count(len(parts[-2]) + len(value), param)
            end = stop
        parts.append(template[end:])
        self._count(len(parts[-1]), param)
        return "".join(parts)

    def _count(self, chars: int, param: str) -> None:
        with self._rendering:
            self.rendered[param] = self.rendered.get(param, 0) + chars
            self.rendered_in_all += chars
            if self.rendered_in_all <= MAX_RENDERED_CHARS:
                return
            # The field that rendered most, whichever of the graders rendering at once
            # passed the cap.
            largest = max(self.rendered, key=self.rendered.__getitem__)
        raise GraderTooLarge(largest, f"'{largest}' renders past the {MAX_RENDERED_CHARS:,} "
                             "characters a grading may render in all (its values put in, "
                             "over every template of the grader).", "template_too_large")

    def _lookup(self, variable: str) -> Any:
        namespace, *path = variable.split(".")
        if namespace not in self.namespaces:
            raise _Failed("invalid_variable_error")
        value = self.namespaces[namespace]
        if namespace == "sample" and path[:1] == ["output_json"] and "output_json" not in value:
            raise _Failed("sample_parse_error")
        for key in path:
            if isinstance(value, dict) and key in value:
                value = value[key]
            elif isinstance(value, list) and key.isdigit() and int(key) < len(value):
                value = value[int(key)]
            else:
                raise _Failed("invalid_variable_error")
        return value

    def flag(self, failure: _Failed) -> None:
        setattr(self.errors, failure.flag, True)
        if failure.flag == "model_grader_server_error" and not \
                self.errors.model_grader_server_error_details:
            self.errors.model_grader_server_error_details = failure.details

    def count(self, model: str, reply: JudgeReply) -> None:
        used = self.usage.setdefault(model, {"prompt_tokens": 0, "completion_tokens": 0,
                                             "total_tokens": 0, "cached_tokens": 0})
        used["prompt_tokens"] += reply.prompt_tokens
        used["completion_tokens"] += reply.completion_tokens
        used["total_tokens"] += reply.prompt_tokens + reply.completion_tokens
        used["cached_tokens"] += reply.cached_tokens


def _variables(template: str) -> Iterator[tuple[int, int, str]]:
    """(start, end, variable) of each `{{ variable }}` in the template, in time linear in its
    length: a variable is what stands between `{{` and the first `}}` after it, stripped of
    whitespace, on one line (a regex with these rules, `\\{\\{\\s*(.*?)\\s*\\}\\}`,
    backtracks: 5,000 spaces after `{{` take it over a minute)."""
    search = 0
    while (start := template.find("{{", search)) >= 0:
        stop = template.find("}}", start + 2)
        if stop < 0:
            return  # no later `{{` has a `}}` after it either
        inner = template[start + 2:stop]
        variable = inner.strip()
        newline = variable.rfind("\n")
        if newline < 0:
            yield start, stop + 2, variable
            search = stop + 2
            continue
        # Not a variable, nor is one from a later `{{` whose text holds this line break:
        # only a `{{` just before the whitespace that leads up to it can start one.
        broken = start + 2 + (len(inner) - len(inner.lstrip())) + newline
        while template[broken - 1].isspace():
            broken -= 1
        search = max(start + 1, broken - 2)


def _as_text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def namespaces(sample: str, item: Any) -> dict[str, Any]:
    """What templates see: `item`, and `sample` with `output_json` when it parses."""
    sampled: dict[str, Any] = {"output_text": sample}
    # RecursionError: nesting too deep for the parser (a degenerate answer of "[[[[…").
    with contextlib.suppress(ValueError, RecursionError):
        sampled["output_json"] = json.loads(sample)
    return {"item": {} if item is None else item, "sample": sampled}


async def run_grader(grader: AnyGrader, sample: str, item: Any = None,
                     judge: Judge | None = None, *, param: str = "grader",
                     judge_timeout: float = JUDGE_TIMEOUT_SECONDS,
                     flag_too_large: bool = False) -> GraderResult:
    """Grades `sample` against `item`. What goes wrong while grading is in the result's error
    flags, with a reward of 0; a judge that rejects the grader's request raises a GraderError
    naming the field (under `param`), and a grading past its bounds a GraderTooLarge (with
    `flag_too_large`, its `other_error` flag instead)."""
    started = time.perf_counter()
    run = _Run(namespaces(sample, item), judge, judge_timeout, flag_too_large=flag_too_large)
    sub_rewards: dict[str, float] = {}
    if isinstance(grader, MultiGrader):
        reward, sub_rewards = await _multi(run, grader, param)
    else:
        reward = await _score(run, grader, param)
    total = sum(u["total_tokens"] for u in run.usage.values())
    return GraderResult(
        reward=0.0 if reward is None or run.errors.raised() else reward,
        sub_rewards=sub_rewards, model_grader_token_usage_per_model=run.usage,
        metadata=GraderMetadata(
            name=grader.name, type=grader.type, errors=run.errors,
            execution_time=time.perf_counter() - started, scores=dict(sub_rewards),
            token_usage=total if run.usage else None,
            sampled_model_name=next(iter(run.usage), None)))


async def _multi(run: _Run, grader: MultiGrader, param: str) -> tuple[float | None,
                                                                    dict[str, float]]:
    # Every grader runs (judges at once) before any error is raised: none is left behind.
    scores = await asyncio.gather(*(_score(run, g, f"{param}.graders.{name}")
                                    for name, g in grader.graders.items()),
                                  return_exceptions=True)
    named: dict[str, float | None] = {}
    for name, score in zip(grader.graders, scores, strict=True):
        if isinstance(score, BaseException):
            raise score
        named[name] = score
    sub_rewards = {name: 0.0 if s is None else s for name, s in named.items()}
    try:
        formula = parse_formula(grader.calculate_output, grader.graders)
    except FormulaError:
        run.errors.formula_parse_error = True
        return None, sub_rewards
    if any(s is None for s in named.values()):
        return None, sub_rewards
    try:
        return formula(sub_rewards), sub_rewards
    except (ArithmeticError, ValueError):
        run.errors.other_error = True
        return None, sub_rewards


async def _score(run: _Run, grader: BaseModel, param: str) -> float | None:
    """The grader's score; None where it failed (its flag is set)."""
    try:
        if isinstance(grader, StringCheckGrader | TextSimilarityGrader):
            # Rendering and comparing take time linear in the texts (quadratic for two
            # metrics, which bound the texts' size): off the event loop.
            return await asyncio.to_thread(_compare, run, grader, param)
        assert isinstance(grader, ScoreModelGrader)
        return await _judged(run, grader, param)
    except _Failed as failure:
        run.flag(failure)
        return None
    except GraderTooLarge:
        if not run.flag_too_large:
            raise
        run.errors.other_error = True
        return None


def _compare(run: _Run, grader: StringCheckGrader | TextSimilarityGrader, param: str) -> float:
    graded = run.render(grader.input, f"{param}.input")
    reference = run.render(grader.reference, f"{param}.reference")
    if isinstance(grader, StringCheckGrader):
        return string_check(grader.operation, graded, reference)
    try:
        return similarity(grader.evaluation_metric, graded, reference)
    except TextsTooLong as exc:
        longer = "input" if len(graded) >= len(reference) else "reference"
        raise GraderTooLarge(f"{param}.{longer}", f"'{param}.{longer}' renders too long to "
                             f"compare: {exc}.", "text_too_long") from None


def string_check(operation: str, graded: str, reference: str) -> float:
    if operation == "eq":
        return float(graded == reference)
    if operation == "ne":
        return float(graded != reference)
    if operation == "like":
        return float(reference in graded)
    return float(reference.casefold() in graded.casefold())


async def _judged(run: _Run, grader: ScoreModelGrader, param: str) -> float:
    messages = await asyncio.to_thread(lambda: [
        {"role": m.role, "content": run.render(m.text(), f"{param}.input[{i}].content")}
        for i, m in enumerate(grader.input)])
    if run.judge is None:
        raise _Failed("model_grader_server_error", "No model server answers score_model "
                      "graders here.")
    try:
        reply = await asyncio.wait_for(
            run.judge(grader.model, messages, grader.sampling_params), run.judge_timeout)
    except TimeoutError:
        raise _Failed("unresponsive_reward_error") from None
    except JudgeError as exc:
        raise _Failed("model_grader_server_error", str(exc)) from None
    except JudgeRejected as exc:
        raise GraderError(f"{param}.{exc.field}", str(exc), exc.code) from None
    run.count(grader.model, reply)
    if reply.refusal:
        raise _Failed("model_grader_refusal_error")
    score = parse_score(reply.text)
    if score is None:
        raise _Failed("model_grader_parse_error")
    low, high = grader.bounds()
    return float(min(max(score, low), high))


_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?")


def parse_score(text: str) -> float | None:
    """The judge's score: `result` (or `score`) of an answer that is a JSON object, as OpenAI's
    judges answer (None where that holds no number: a number among its other fields is not
    the score), else the answer's first number."""
    try:
        # NaN has no place in a range; a score too large for a float is clamped all the same.
        value = json.loads(text, parse_constant=lambda _: None)
    except (ValueError, RecursionError):
        value = None
    if isinstance(value, dict):
        value = value.get("result", value.get("score"))
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value
    found = _NUMBER.search(text)
    return float(found.group()) if found else None
