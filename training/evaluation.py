"""Built-in evaluation: the base model and the fine-tuned one answer the job's validation
examples (greedy), graded the way OpenAI's graders do, so a user sees what training changed.

Graders, per example, against the example's last assistant message:
- `exact_match` (OpenAI's `string_check`, `eq`): the answer equals the expected text
  (surrounding whitespace ignored);
- `text_similarity` (OpenAI's `text_similarity`, `fuzzy_match`): rapidfuzz's normalized
  Indel similarity, 0..1;
- when every expected answer is a JSON object: `json_valid` (the answer parses as a JSON
  object) and `json_same_keys` (with exactly the expected keys).

A DPO job's pairs are also scored by what DPO optimises: each model's log-probability of the
preferred answer minus the rejected one's, after the prompt (`preference_margin`, summed over
the answer's tokens) and whether it is above 0 (`preference_accuracy`: the model prefers what
the data prefers). The prompt's own tokens are the same in both sequences, so the margin is
the difference of the two whole sequences' log-probabilities.

A reinforcement job has no reference answers: its validation prompts are answered and scored
by the job's own grader, with the row as the grader's `item`: `reward` (the grader's
reward), `passed` (the reward is at least `PASS_THRESHOLD`, for a score_model grader the
middle of its range) and, for a multi grader, `reward_<name>` for each named grader.
"""

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from rapidfuzz import fuzz

from training.graders import AnyGrader, Judge, ScoreModelGrader, parse_grader, run_grader
from training.hyperparameters import DEFAULT_MAX_COMPLETION_TOKENS
from training.rewards import GRADER_PARAM

# Answers get room for the longest expected answer plus this share, within the cap.
NEW_TOKENS_HEADROOM, MIN_NEW_TOKENS, MAX_NEW_TOKENS = 1.5, 16, 512
# A reinforcement answer passes with at least this reward (a score_model grader: the middle
# of its range): string_check's 1 passes, its 0 does not, a fuzzy match must be half right.
PASS_THRESHOLD = 0.5

# Per example, each grader's score (`grade`, or the job's grader for reinforcement).
Scores = list[dict[str, float]]
# Scores the answers to the examples; async, as a score_model grader asks its judge.
Scorer = Callable[[list["EvalExample"], list[str]], Awaitable[Scores]]


@dataclass(frozen=True)
class EvalExample:
    prompt: list[dict[str, Any]]
    expected: str
    tools: list[dict[str, Any]] | None = None
    item: dict[str, Any] | None = None  # a reinforcement row: its grader's `item`
    rejected: str | None = None  # a DPO pair's non-preferred answer

    def with_answer(self, answer: str) -> list[dict[str, Any]]:
        """The conversation that ends with `answer` as the assistant's turn."""
        return [*self.prompt, {"role": "assistant", "content": answer}]


def _plain(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in m.items() if k != "weight"} for m in messages]


def eval_examples(method: str, records: Iterable[dict[str, Any]],
                  limit: int) -> list[EvalExample]:
    """The first `limit` records whose target is text: for SFT the last assistant message
    and what precedes it, for DPO the preferred output after the input; for reinforcement
    every row, its messages the prompt. `records` is read no further than that."""
    examples: list[EvalExample] = []
    for record in records:
        if len(examples) >= limit:
            break
        if method == "reinforcement":
            examples.append(EvalExample(prompt=_plain(record["messages"]), expected="",
                                        tools=record.get("tools"), item=record))
            continue
        rejected = None
        if method == "dpo":
            prompt, targets = record["input"]["messages"], record["preferred_output"]
            rejected = (record.get("non_preferred_output") or [{}])[-1].get("content")
            if not isinstance(rejected, str) or not rejected.strip():
                continue  # no text to compare the preferred answer with
        else:
            last = max((i for i, m in enumerate(record["messages"])
                        if m.get("role") == "assistant"), default=None)
            if last is None:
                continue
            prompt, targets = record["messages"][:last], record["messages"][last:last + 1]
        expected = targets[-1].get("content") if targets else None
        if isinstance(expected, str) and expected.strip():
            examples.append(EvalExample(prompt=_plain(prompt), expected=expected,
                                        tools=record.get("tools"), rejected=rejected))
    return examples


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        value = json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def is_json_task(examples: list[EvalExample]) -> bool:
    return bool(examples) and all(_json_object(e.expected) is not None for e in examples)


def grade(expected: str, answer: str, json_task: bool) -> dict[str, float]:
    scores = {
        "exact_match": float(answer.strip() == expected.strip()),
        "text_similarity": round(fuzz.ratio(answer.strip(), expected.strip()) / 100, 4),
    }
    if json_task:
        got, want = _json_object(answer.strip()), _json_object(expected)
        scores["json_valid"] = float(got is not None)
        scores["json_same_keys"] = float(got is not None and want is not None
                                         and set(got) == set(want))
    return scores


async def reference_scores(examples: list[EvalExample], answers: list[str]) -> Scores:
    """The Scorer of supervised and DPO jobs: each answer against its reference."""
    json_task = is_json_task(examples)
    return [grade(e.expected, a, json_task) for e, a in zip(examples, answers, strict=True)]


def _pass_threshold(grader: AnyGrader) -> float:
    if isinstance(grader, ScoreModelGrader):
        low, high = grader.bounds()
        return (low + high) / 2
    return PASS_THRESHOLD


def grader_scorer(grader_data: dict[str, Any], judge: Judge | None,
                  judge_timeout: float) -> Scorer:
    """The Scorer of a reinforcement job: its grader, as its training rewards are graded
    (a grading past its bounds is a reward of 0, flagged, not the end of the evaluation)."""
    grader = parse_grader(grader_data, GRADER_PARAM)
    threshold = _pass_threshold(grader)

    async def score(examples: list[EvalExample], answers: list[str]) -> Scores:
        results = await asyncio.gather(*(
            run_grader(grader, answer, example.item, judge, param=GRADER_PARAM,
                       judge_timeout=judge_timeout, flag_too_large=True)
            for example, answer in zip(examples, answers, strict=True)))
        return [{"reward": r.reward, "passed": float(r.reward >= threshold),
                 **{f"reward_{name}": value for name, value in sorted(r.sub_rewards.items())}}
                for r in results]

    return score


def scorer_for(method: dict[str, Any], judge: Judge | None, judge_timeout: float) -> Scorer:
    """A job's Scorer: a reinforcement job's own grader, the other methods' references."""
    grader = (method.get("reinforcement") or {}).get("grader")
    if method.get("type") != "reinforcement" or not grader:
        return reference_scores
    return grader_scorer(grader, judge, judge_timeout)


def answer_tokens(method: dict[str, Any]) -> int | None:
    """The answer length a reinforcement job trained with (None: as long as the longest
    reference answer needs, for the other methods)."""
    if method.get("type") != "reinforcement":
        return None
    value = (method.get("reinforcement") or {}).get("hyperparameters", {}).get(
        "max_completion_tokens")
    return value if isinstance(value, int) else DEFAULT_MAX_COMPLETION_TOKENS


def summarize(scores: list[dict[str, float]]) -> dict[str, float]:
    """Each grader's mean over the examples."""
    if not scores:
        return {}
    return {name: round(sum(s[name] for s in scores) / len(scores), 4) for name in scores[0]}


def new_tokens_budget(examples: list[EvalExample], count: Callable[[str], int],
                      answer_tokens: int | None = None) -> int:
    if answer_tokens is not None:
        return max(1, min(MAX_NEW_TOKENS, answer_tokens))
    longest = max((count(e.expected) for e in examples), default=0)
    return max(MIN_NEW_TOKENS, min(MAX_NEW_TOKENS, int(longest * NEW_TOKENS_HEADROOM) + 8))


def _batches(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def generate(model: Any, tokenizer: Any, examples: list[EvalExample], max_new_tokens: int,
             batch_size: int) -> list[str]:
    """Greedy answers, batched with left padding (a decoder continues from the right)."""
    import torch

    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    answers: list[str] = []
    for batch in _batches(examples, batch_size):
        texts = [tokenizer.apply_chat_template(e.prompt, tools=e.tools, tokenize=False,
                                               add_generation_prompt=True) for e in batch]
        inputs = tokenizer(texts, return_tensors="pt", padding=True,
                           add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 temperature=None, top_p=None, top_k=None,
                                 pad_token_id=tokenizer.pad_token_id)
        new = out[:, inputs["input_ids"].shape[1]:]
        answers += [t.strip() for t in tokenizer.batch_decode(new, skip_special_tokens=True)]
    return answers


@dataclass
class Evaluation:
    """Answers of the base, the final model, and each kept checkpoint; `grade` scores them."""

    examples: list[EvalExample]
    base: list[str]
    fine_tuned: list[str]
    checkpoints: dict[str, list[str]]  # checkpoint model name -> answers
    # The model whose answers are `base`: the one the job started from (its base model, or
    # the fine-tuned model a job on `ft:...` continues), so the evaluation is before/after.
    base_model: str = ""
    # DPO: "base", "fine_tuned" and each checkpoint's name -> each pair's preference margin.
    margins: dict[str, list[float]] = field(default_factory=dict)
    # "base", "fine_tuned" and each checkpoint's name -> its scores, once graded.
    scores: dict[str, Scores] = field(default_factory=dict)

    async def grade(self, scorer: Scorer) -> "Evaluation":
        answered = {"base": self.base, "fine_tuned": self.fine_tuned, **self.checkpoints}
        graded = await asyncio.gather(*(scorer(self.examples, answers)
                                        for answers in answered.values()))
        self.scores = dict(zip(answered, graded, strict=True))
        for name, margins in self.margins.items():
            for scores, margin in zip(self.scores[name], margins, strict=True):
                scores["preference_accuracy"] = float(margin > 0)
                scores["preference_margin"] = round(margin, 4)
        return self

    def summary(self, steps: dict[str, int], generated_by: str) -> dict[str, Any]:
        """`generated_by`: `engine` (the serving engine answered) or `worker` (the training
        worker, with the model it had just trained)."""
        return {
            "n_examples": len(self.examples), "generated_by": generated_by,
            "base_model": self.base_model,
            "base": summarize(self.scores["base"]),
            "fine_tuned": summarize(self.scores["fine_tuned"]),
            "checkpoints": [{"fine_tuned_model_checkpoint": name, "step_number": steps[name],
                             **summarize(self.scores[name])}
                            for name in self.checkpoints],
        }

    def jsonl(self) -> bytes:
        """The `fine-tune-eval` file: one line per example."""
        base, tuned = self.scores["base"], self.scores["fine_tuned"]
        lines = []
        for i, example in enumerate(self.examples):
            reference = ({"item": example.item} if example.item is not None
                         else {"expected": example.expected})
            lines.append(json.dumps({
                "prompt": example.prompt, **reference,
                "base_output": self.base[i], "fine_tuned_output": self.fine_tuned[i],
                "base_scores": base[i], "fine_tuned_scores": tuned[i],
            }))
        return ("\n".join(lines) + "\n").encode()


def preference_margins(model: Any, tokenizer: Any, examples: list[EvalExample]) -> list[float]:
    """Each pair's log-probability of the preferred answer minus the rejected one's, under
    the model as it is (one sequence at a time: a pair's two differ in length)."""
    import torch

    def logprob(example: EvalExample, answer: str) -> float:
        text = tokenizer.apply_chat_template(example.with_answer(answer), tools=example.tools,
                                             tokenize=False)
        ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
        ids = ids.to(model.device)
        with torch.inference_mode():
            logits = model(input_ids=ids).logits[0, :-1].float()
        picked = torch.log_softmax(logits, dim=-1).gather(1, ids[0, 1:, None])
        return float(picked.sum())

    return [logprob(e, e.expected) - logprob(e, e.rejected or "") for e in examples]


Weights = Callable[[], dict[str, Any] | None]


def evaluate(model: Any, tokenizer: Any, examples: list[EvalExample],
             checkpoints: Mapping[str, Weights], batch_size: int,
             should_stop: Callable[[], bool], answer_tokens: int | None = None,
             base_model: str = "", start_from: tuple[str, Weights] | None = None,
             ) -> Evaluation | None:
    """Answers of the trained adapter as it is, then of each checkpoint (its adapter weights
    loaded in turn: call this after the final adapter is saved; one whose weights are gone
    is left out), then of the model the job started from: `start_from` (the fine-tuned
    model's name and weights) for a job that continued one, else `base_model` (the adapter
    disabled), which is also what answers where those weights are gone. None if the job
    stopped meanwhile."""
    from peft import set_peft_model_state_dict

    model.eval()
    budget = new_tokens_budget(examples, lambda t: len(tokenizer(t)["input_ids"]),
                               answer_tokens)

    pairs = all(e.rejected is not None for e in examples)
    margins: dict[str, list[float]] = {}

    def answers(name: str) -> list[str]:
        if pairs:
            margins[name] = preference_margins(model, tokenizer, examples)
        return generate(model, tokenizer, examples, budget, batch_size)

    result = Evaluation(examples=examples, base=[], fine_tuned=answers("fine_tuned"),
                        checkpoints={}, margins=margins)
    for name, weights in checkpoints.items():
        if should_stop():
            return None
        state = weights()
        if state is not None:
            set_peft_model_state_dict(model, state)
            result.checkpoints[name] = answers(name)
    if should_stop():
        return None
    state = start_from[1]() if start_from is not None else None
    if start_from is not None and state is not None:
        set_peft_model_state_dict(model, state)
        result.base, result.base_model = answers("base"), start_from[0]
    else:
        with model.disable_adapter():
            result.base, result.base_model = answers("base"), base_model
    return result


def headline(summary: dict[str, Any]) -> str:
    base, tuned = summary["base"], summary["fine_tuned"]
    if "reward" in base:
        return (f"Evaluation on {summary['n_examples']} validation prompts: mean reward "
                f"{base['reward']:.2f} -> {tuned['reward']:.2f}, pass rate "
                f"{base['passed']:.2f} -> {tuned['passed']:.2f}")
    if "preference_accuracy" in base:
        return (f"Evaluation on {summary['n_examples']} validation pairs: preference accuracy "
                f"{base['preference_accuracy']:.2f} -> {tuned['preference_accuracy']:.2f}, "
                f"mean margin {base['preference_margin']:.2f} -> "
                f"{tuned['preference_margin']:.2f}, exact match {base['exact_match']:.2f} -> "
                f"{tuned['exact_match']:.2f}")
    return (f"Evaluation on {summary['n_examples']} validation examples: exact match "
            f"{base['exact_match']:.2f} -> {tuned['exact_match']:.2f}, text similarity "
            f"{base['text_similarity']:.2f} -> {tuned['text_similarity']:.2f}")
