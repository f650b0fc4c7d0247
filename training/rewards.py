"""A reinforcement job's grader as TRL GRPO reward functions: each sampled answer is graded
as `sample`, with its dataset row as `item`, by the same engine as
`/v1/fine_tuning/alpha/graders/run` (training/graders.py).

The reward functions are async: TRL runs them at once on one event loop of its own, which
lets a score_model grader's judge requests go out together and keep their connections for
the whole run. A multi grader's named graders are logged beside its reward, from the same
grading of the same answers (a judge is asked once per sample, not once per function)."""

import asyncio
import json
from collections.abc import Callable
from typing import Any

from training.graders import AnyGrader, GraderResult, Judge, MultiGrader, parse_grader, run_grader

ITEM_COLUMN = "item_json"
GRADER_PARAM = "method.reinforcement.grader"
# TRL's metric (the share of a step's samples whose grading raised an error flag: a judge
# that failed or did not answer, a template that did not resolve or rendered too large);
# such a sample's reward is 0.
ERROR_RATE_METRIC = "grader_error_rate"


class _Grading:
    """The grading of one batch of answers, shared by the functions of one grader."""

    def __init__(self, grader: AnyGrader, judge: Judge | None, judge_timeout: float) -> None:
        self.grader, self.judge, self.judge_timeout = grader, judge, judge_timeout
        self._batch: tuple[list[Any], asyncio.Future[list[GraderResult]]] | None = None

    def of(self, completions: list[Any], columns: dict[str, Any]
           ) -> asyncio.Future[list[GraderResult]]:
        # TRL hands every reward function the same list object for one batch.
        if self._batch is None or self._batch[0] is not completions:
            items = [json.loads(item) for item in columns[ITEM_COLUMN]]
            self._batch = (completions, asyncio.ensure_future(
                self._grade([_text(c) for c in completions], items,
                            columns.get("log_metric"))))
        return self._batch[1]

    async def _grade(self, texts: list[str], items: list[Any],
                     log_metric: Callable[[str, float], None] | None) -> list[GraderResult]:
        # A row whose grading is past its bounds (an item too large to render) is that
        # sample's `other_error`, not the end of the job.
        results = await asyncio.gather(*(
            run_grader(self.grader, text, item, self.judge, param=GRADER_PARAM,
                       judge_timeout=self.judge_timeout, flag_too_large=True)
            for text, item in zip(texts, items, strict=True)))
        if log_metric is not None and results:
            failed = sum(r.metadata.errors.raised() for r in results)
            log_metric(ERROR_RATE_METRIC, failed / len(results))
        return list(results)


class GraderReward:
    """One reward function: the grader's reward, or with `part` one named grader's score
    of a multi grader (None where it could not be scored). TRL names its metrics after
    `__name__` (`rewards/<name>/mean`, `…/std`)."""

    def __init__(self, grading: _Grading, name: str, part: str | None = None) -> None:
        self.grading, self.part, self.__name__ = grading, part, name

    async def __call__(self, prompts: list[Any], completions: list[Any],
                       **columns: Any) -> list[float | None]:
        results = await self.grading.of(completions, columns)
        if self.part is None:
            return [r.reward for r in results]
        return [r.sub_rewards.get(self.part) for r in results]


def _text(completion: Any) -> str:
    """A completion as text: TRL hands conversational ones as a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


def reward_functions(grader_data: dict[str, Any], judge: Judge | None,
                     judge_timeout: float) -> tuple[list[GraderReward], list[float]]:
    """The job's reward, and for a multi grader each named grader beside it at weight 0:
    logged per grader, trained on the formula's value alone."""
    grader = parse_grader(grader_data, GRADER_PARAM)
    grading = _Grading(grader, judge, judge_timeout)
    funcs = [GraderReward(grading, grader.name)]
    if isinstance(grader, MultiGrader):
        funcs += [GraderReward(grading, f"{grader.name}.{name}", name)
                  for name in grader.graders]
    return funcs, [1.0] + [0.0] * (len(funcs) - 1)


def rft_rows(records: list[dict[str, Any]], tokenizer: Any) -> list[dict[str, Any]]:
    """The prompts GRPO samples answers to, each with its whole row for the grader's `item`.
    TRL's GRPO renders one set of tools for every prompt: where rows bring their own
    `tools`, every prompt is rendered here, with its row's tools, to text."""
    with_tools = any(r.get("tools") for r in records)
    # TRL tokenizes text prompts with the tokenizer's special tokens: a BOS the template
    # writes too would be there twice.
    bos = tokenizer.bos_token if with_tools and _adds_bos(tokenizer) else None
    rows = []
    for record in records:
        prompt: Any = [{k: v for k, v in m.items() if k != "weight"} for m in record["messages"]]
        if with_tools:
            prompt = tokenizer.apply_chat_template(prompt, tools=record.get("tools") or None,
                                                   add_generation_prompt=True, tokenize=False)
            prompt = prompt.removeprefix(bos) if bos else prompt
        rows.append({"prompt": prompt, ITEM_COLUMN: json.dumps(record)})
    return rows


def _adds_bos(tokenizer: Any) -> bool:
    bos_id = getattr(tokenizer, "bos_token_id", None)
    return bos_id is not None and tokenizer("")["input_ids"][:1] == [bos_id]
