"""A reinforcement job's grader as TRL GRPO reward functions: each sampled answer is graded
as `sample`, with its dataset row as `item`, by the same engine as
`/v1/fine_tuning/alpha/graders/run` (training/graders.py)."""

import asyncio
import json
from typing import Any

from training.graders import AnyGrader, MultiGrader, parse_grader, run_grader

ITEM_COLUMN = "item_json"


class GraderReward:
    """One reward function. TRL names its metrics after `__name__`
    (`rewards/<name>/mean`, `…/std`)."""

    def __init__(self, grader: AnyGrader, name: str) -> None:
        self.grader, self.__name__ = grader, name

    def __call__(self, prompts: list[Any], completions: list[Any], **columns: Any) -> list[float]:
        items = [json.loads(item) for item in columns[ITEM_COLUMN]]
        texts = [_text(c) for c in completions]

        async def grade_all() -> list[float]:
            results = await asyncio.gather(*(run_grader(self.grader, text, item)
                                             for text, item in zip(texts, items, strict=True)))
            return [r.reward for r in results]

        return asyncio.run(grade_all())


def _text(completion: Any) -> str:
    """A completion as text: TRL hands conversational ones as a list of messages."""
    if isinstance(completion, str):
        return completion
    return "".join(str(m.get("content") or "") for m in completion)


def reward_functions(grader_data: dict[str, Any]) -> tuple[list[GraderReward], list[float]]:
    """The job's reward, and for a multi grader each named grader beside it at weight 0:
    logged per grader, trained on the formula's value alone."""
    grader = parse_grader(grader_data, "method.reinforcement.grader")
    funcs = [GraderReward(grader, grader.name)]
    if isinstance(grader, MultiGrader):
        funcs += [GraderReward(sub, f"{grader.name}.{name}")  # type: ignore[arg-type]
                  for name, sub in grader.graders.items()]
    return funcs, [1.0] + [0.0] * (len(funcs) - 1)


def rft_row(record: dict[str, Any]) -> dict[str, Any]:
    """The prompt GRPO samples answers to, and the whole row for the grader's `item`."""
    return {"prompt": [{k: v for k, v in m.items() if k != "weight"}
                       for m in record["messages"]],
            ITEM_COLUMN: json.dumps(record)}
