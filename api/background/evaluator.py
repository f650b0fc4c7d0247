"""The built-in evaluation answered by the serving engine, for jobs whose base it serves.

After such a job succeeded, this node claims its evaluation (see
`training/evaluation_state.py`), has the base model, the fine-tuned model and each kept
checkpoint answer the job's validation examples greedily through the same leases and routing
as tenants' requests (many at once: vLLM batches them), grades the answers as the worker
would, and publishes the result on the job."""

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool

from api.settings import Settings
from serving.adapters import AdapterLoadError, AdapterManager, ModelNotFound
from serving.engine import EngineTimeout, EngineUnavailable
from serving.proxy import Answer, Proxy
from serving.send import send
from storage.base_models import base_models
from storage.blob import BlobStore
from storage.db import Database
from storage.files import add_file
from storage.ids import new_id, random_token
from storage.keys import file_key
from storage.models import FineTuningJob
from training import evaluation_state, jobs
from training.data import iter_records
from training.evaluation import (
    EvalExample,
    Evaluation,
    answer_tokens,
    eval_examples,
    headline,
    new_tokens_budget,
    scorer_for,
)
from training.graders import Judge
from training.tokens import token_counter

log = logging.getLogger("tuneserve.evaluator")


class EvaluationFailed(Exception):
    """The engine could not answer; the evaluation is tried again later (a few times)."""


class EngineEvaluator:
    def __init__(self, settings: Settings, db: Database, store: BlobStore,
                 adapters: AdapterManager, proxy: Proxy,
                 judges: Callable[[str], Judge] | None = None) -> None:
        """`judges`: a project's judge for score_model graders (reinforcement jobs' grader
        asks it); without one, such a grading is flagged as its judge's failure."""
        self.settings, self.db, self.store = settings, db, store
        self.adapters, self.proxy, self.judges = adapters, proxy, judges
        self.token = random_token(16)

    async def run(self) -> None:
        bases = self.settings.engine_evaluated_bases()
        while bases:
            try:
                await self.run_once(bases)
            except Exception:
                log.exception("looking for evaluations to run failed; trying again later")
            await asyncio.sleep(self.settings.eval_interval_seconds)

    async def run_once(self, bases: list[str]) -> int:
        """Runs every evaluation waiting on these bases that this node can claim."""
        with self.db.session() as s:
            waiting = evaluation_state.candidates(s, bases)
        done = 0
        for job_id in waiting:
            now = time.time()
            with self.db.session() as s:
                job = evaluation_state.claim(s, job_id, self.token, now,
                                             now - self.settings.eval_claim_timeout_seconds)
                if job is not None:
                    s.expunge(job)
            if job is not None:
                await self._evaluate(job)
                done += 1
        return done

    async def _evaluate(self, job: FineTuningJob) -> None:
        try:
            await self._publish(job, await self._answer(job))
        except ModelNotFound:
            self._give_up(job, "The fine-tuned model was deleted before it was evaluated.",
                          final=True)
        except EngineUnavailable:
            with self.db.session() as s:  # not the evaluation's fault: wait for the engine
                evaluation_state.release(s, job.id, self.token)
        except (EvaluationFailed, EngineTimeout, AdapterLoadError) as exc:
            log.warning("evaluation of %s failed: %s", job.id, exc)
            self._give_up(job, "The model server could not answer the evaluation.")
        except Exception:
            log.exception("evaluation of %s failed", job.id)
            self._give_up(job, "The evaluation could not be completed.")

    def _give_up(self, job: FineTuningJob, error: str, final: bool = False) -> None:
        with self.db.session() as s:
            state = evaluation_state.give_up(s, job.id, self.token, error,
                                             self.settings.eval_max_attempts, final)
            if state == evaluation_state.FAILED:
                jobs.add_event(s, job.id, f"Evaluation failed: {error}", level="warn")

    def examples(self, job: FineTuningJob) -> list[EvalExample]:
        """The validation file's first examples, read no further than they are: the file may
        be hundreds of MiB, and this process serves every tenant."""
        records = iter_records(self.store, file_key(job.project_id, job.validation_file or ""),
                               "validation_file")
        return eval_examples(job.method["type"], records, self.settings.eval_max_examples)

    async def _answer(self, job: FineTuningJob) -> tuple[Evaluation, dict[str, int]] | None:
        """The answers of every model, and each checkpoint's step; None if no example has a
        text answer."""
        examples = await run_in_threadpool(self.examples, job)
        if not examples:
            return None
        spec = base_models(self.settings)[job.base_model]
        counter = await run_in_threadpool(token_counter, spec.path)
        budget = new_tokens_budget(examples, lambda t: len(counter.tokenizer(t)["input_ids"]),
                                   answer_tokens(job.method))
        with self.db.session() as s:
            kept = evaluation_state.checkpoints(s, job.id, job.step or 0)
        before, base = await self._before(job, examples, budget)
        result = Evaluation(examples=examples, base=base, base_model=before, checkpoints={},
                            fine_tuned=await self._answers(job, job.fine_tuned_model or "",
                                                           examples, budget))
        for name, _, _ in kept:
            try:
                result.checkpoints[name] = await self._answers(job, name, examples, budget)
            except ModelNotFound:  # the checkpoint was deleted meanwhile
                continue
        judge = self.judges(job.project_id) if self.judges is not None else None
        await result.grade(scorer_for(job.method, judge, self.settings.judge_timeout_seconds))
        return result, {name: step for name, step, _ in kept}

    async def _before(self, job: FineTuningJob, examples: list[EvalExample],
                      budget: int) -> tuple[str, list[str]]:
        """The name and answers of the model the job started from (the evaluation's "before"):
        the fine-tuned model it continued, while that exists, else its base."""
        if job.parent_model:
            with contextlib.suppress(ModelNotFound):
                return job.parent_model, await self._answers(job, job.parent_model, examples,
                                                             budget)
        return job.base_model, await self._answers(job, job.base_model, examples, budget)

    async def _answers(self, job: FineTuningJob, model: str, examples: list[EvalExample],
                       budget: int) -> list[str]:
        """One model's greedy answers to every example, `eval_batch_size` at a time."""
        room = asyncio.Semaphore(self.settings.eval_batch_size)

        async def answer(example: EvalExample) -> str:
            payload: dict[str, Any] = {"messages": example.prompt, "max_tokens": budget,
                                       "temperature": 0}
            if example.tools:
                payload["tools"] = example.tools
            async with room:
                out, lease = await send(self.adapters, self.proxy, job.project_id, model,
                                        "/v1/chat/completions", payload, stream=False)
                lease.release()
            assert isinstance(out, Answer)
            return _content(out)

        answers = await asyncio.gather(*(answer(e) for e in examples))
        with self.db.session() as s:
            if not evaluation_state.renew(s, job.id, self.token, time.time()):
                raise EvaluationFailed("the claim was taken over")
        return answers

    async def _publish(self, job: FineTuningJob,
                       answered: tuple[Evaluation, dict[str, int]] | None) -> None:
        if answered is None:  # nothing to compare with: no evaluation, as from a worker
            with self.db.session() as s:
                evaluation_state.drop(s, job.id, self.token)
            return
        result, steps = answered
        summary = result.summary(steps, "engine")
        data = result.jsonl()
        eval_id = new_id("file-")
        await run_in_threadpool(self.store.put, file_key(job.project_id, eval_id), data)
        with self.db.session() as s:
            done = evaluation_state.finish(s, job.id, self.token, summary, eval_id)
            if done:
                add_file(s, file_id=eval_id, project_id=job.project_id,
                         filename="eval_results.jsonl", purpose="fine-tune-eval",
                         size=len(data))
                jobs.add_event(s, job.id, headline(summary), type="metrics",
                               data={"step": job.step,
                                     "evaluation": {**summary, "result_file": eval_id}})
        if not done:
            await run_in_threadpool(self.store.delete, file_key(job.project_id, eval_id))


def _content(answer: Answer) -> str:
    """The answer's text; a request the engine refused (say, an example too long for its
    context) counts as an empty answer, an engine error fails the evaluation."""
    if answer.status >= 500:
        raise EvaluationFailed(f"the engine answered {answer.status}")
    if answer.status != 200:
        return ""
    message = (answer.body.get("choices") or [{}])[0].get("message") or {}
    return str(message.get("content") or "").strip()
