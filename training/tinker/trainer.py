"""`python -m training.tinker.trainer MODEL_ID ATTEMPT`: holds one Tinker training run's LoRA
and optimizer in memory and executes the run's requests (`tinker_futures` rows) in the
training client's `seq_id` order, as long as the run's session lives.

Gradients accumulate across forward_backward calls until optim_step applies them, as the SDK
expects (it splits one batch into chunks and sends them in parallel: order is restored here,
from the sequence numbers). The model is loaded as jobs load it (training/trainer.py:
Unsloth, a 4-bit base where the base is large enough: see `run_config`)."""

import contextlib
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Select, select

from storage.base_models import BaseModelSpec, base_models
from storage.blob import BlobStore, open_blob_store
from storage.db import Database
from storage.models import TinkerCheckpoint, TinkerFuture, TinkerModel
from training.hyperparameters import (
    ALL_PROJECTIONS,
    QLORA_FROM_PARAMETERS,
    RULE_ALPHA,
    Hyperparameters,
    ModelShape,
)
from training.launcher import forked_from_launcher
from training.settings import TrainingSettings
from training.tinker import checkpoints, futures, runs, sessions
from training.tinker.futures import FutureStatus
from training.tinker.losses import loss_for
from training.tinker.wire import (
    BadRequest,
    Datum,
    ForwardBackward,
    decode_forward_backward,
    encode_output,
)
from training.trainer import RunConfig, load_model

log = logging.getLogger("tuneserve.tinker")

# How often the trainer looks for its next request when it has none.
POLL_SECONDS = 0.05
# A request whose predecessor (seq_id - 1) never arrived runs after waiting this long: the
# SDK stops sending a client's requests only when the client failed.
GAP_SECONDS = 30.0
# Tokens one forward pass takes at once (the datums of a request are padded into batches of
# about this many): bounds the logits' memory (tokens x vocabulary floats).
MICRO_BATCH_TOKENS = 2048

ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
MLP = [m for m in ALL_PROJECTIONS if m not in ATTENTION]


def target_modules(lora: dict[str, Any]) -> list[str]:
    """The projections the run's LoRA adapts. `train_unembed` adds none: vLLM serves no LoRA
    on the output embedding, and every sampler checkpoint must serve."""
    return ((ATTENTION if lora.get("train_attn", True) else [])
            + (MLP if lora.get("train_mlp", True) else []))


@dataclass
class Trainer:
    model: Any
    optimizer: Any
    vocab_size: int
    context_length: int
    # A later trainer of a run that had trained: its weights went with the one before, and
    # only a load brings the run back.
    weights_lost: bool = False

    def forward_backward(self, request: ForwardBackward) -> bytes:
        import torch

        losses = [loss_for(request.loss_fn, set(d.inputs), i) for i, d in enumerate(request.data)]
        for i, datum in enumerate(request.data):
            self._check_tokens(i, datum)
        device = next(self.model.parameters()).device
        logprobs: dict[int, np.ndarray] = {}
        total = 0.0
        for batch in _micro_batches(request.data):
            longest = max(len(request.data[i].tokens) for i in batch)
            ids = torch.zeros((len(batch), longest), dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(batch):
                tokens = torch.from_numpy(request.data[i].tokens)
                ids[row, :len(tokens)] = tokens
                mask[row, :len(tokens)] = 1
            with torch.set_grad_enabled(not request.forward_only):
                logits = self.model(input_ids=ids.to(device),
                                    attention_mask=mask.to(device)).logits.float()
                batch_loss = logits.new_zeros(())
                for row, i in enumerate(batch):
                    datum = request.data[i]
                    inputs = {k: torch.from_numpy(np.array(v, dtype=np.float32)).to(device)
                              for k, v in datum.inputs.items() if k != "target_tokens"}
                    targets = torch.from_numpy(
                        datum.inputs["target_tokens"].astype(np.int64)).to(device)
                    n = len(datum.tokens)
                    row_logits = logits[row, :n]
                    lp = (row_logits.gather(-1, targets[:, None])[:, 0]
                          - torch.logsumexp(row_logits, dim=-1))
                    batch_loss = batch_loss + losses[i](lp, inputs, request.config)
                    logprobs[i] = lp.detach().cpu().numpy()
                if not request.forward_only:
                    batch_loss.backward()
            total += float(batch_loss.detach())
        return encode_output([{"logprobs": logprobs[i]} for i in range(len(request.data))],
                             {"loss:sum": total})

    def _check_tokens(self, i: int, datum: Datum) -> None:
        if len(datum.tokens) > self.context_length:
            raise BadRequest(f"data[{i}] has {len(datum.tokens)} tokens; the base takes at "
                             f"most {self.context_length}.")
        for name, values in (("model_input", datum.tokens),
                             ("loss_fn_inputs['target_tokens']", datum.inputs["target_tokens"])):
            if values.min() < 0 or values.max() >= self.vocab_size:
                raise BadRequest(f"data[{i}].{name} holds a token id outside the base's "
                                 f"vocabulary (0 to {self.vocab_size - 1}).")

    def optim_step(self, params: dict[str, float]) -> dict[str, Any]:
        """One AdamW step with the request's AdamParams (decoupled weight decay, as
        torch.optim.AdamW); the accumulated gradients are then cleared."""
        import torch

        for group in self.optimizer.param_groups:
            group["lr"] = params["learning_rate"]
            group["betas"] = (params["beta1"], params["beta2"])
            group["eps"] = params["eps"]
            group["weight_decay"] = params["weight_decay"]
        trainable = [p for g in self.optimizer.param_groups for p in g["params"]]
        clip = params["grad_clip_norm"]
        norm = torch.nn.utils.clip_grad_norm_(trainable, clip if clip > 0 else float("inf"))
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return {"metrics": {"grad_norm:mean": float(norm)}}


def _micro_batches(data: list[Datum]) -> Iterator[list[int]]:
    """Datum indices, longest first, in batches of about MICRO_BATCH_TOKENS padded tokens."""
    order = sorted(range(len(data)), key=lambda i: -len(data[i].tokens))
    batch: list[int] = []
    for i in order:
        longest = len(data[batch[0]].tokens) if batch else len(data[i].tokens)
        if batch and longest * (len(batch) + 1) > MICRO_BATCH_TOKENS:
            yield batch
            batch = []
        batch.append(i)
    if batch:
        yield batch


def run_config(lora: dict[str, Any], spec: BaseModelSpec, workdir: Path) -> RunConfig:
    """How the trainer loads the run's base and LoRA (pure: unit-tested for CUDA without
    one): as a job of that base would by default, a 4-bit base (QLoRA) from
    QLORA_FROM_PARAMETERS up."""
    hp = Hyperparameters(n_epochs=1, batch_size=1, learning_rate_multiplier=1.0,
                         learning_rate=1e-4, lora_rank=int(lora["rank"]),
                         lora_alpha=RULE_ALPHA, target_modules=target_modules(lora),
                         use_qlora=ModelShape.of(spec.config).parameters
                         >= QLORA_FROM_PARAMETERS,
                         max_seq_length=spec.context_length)
    return RunConfig(method="supervised", model_dir=spec.path, output_dir=workdir,
                     hyperparameters=hp, seed=int(lora.get("seed") or 0))


def load_trainer(run: TinkerModel, settings: TrainingSettings, workdir: Path) -> Trainer:
    import torch

    if not torch.cuda.is_available() and not forked_from_launcher():
        torch.set_num_threads(settings.tinker_cpu_threads)

    spec = base_models(settings)[run.base_model]
    # Unsloth hands back logits only when asked: the losses are computed here, on them.
    os.environ["UNSLOTH_RETURN_LOGITS"] = "1"
    model, _ = load_model(run_config(run.lora_config, spec, workdir))
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad],
                                  lr=1e-4, betas=(0.9, 0.95), eps=1e-12, weight_decay=0.0)
    return Trainer(model=model, optimizer=optimizer,
                   vocab_size=int(spec.config.get("vocab_size", 0)),
                   context_length=spec.context_length)


class Beat:
    """The trainer's beat, on its own thread so a long request does not silence it."""

    def __init__(self, db: Database, model_id: str, attempt: int) -> None:
        self.db, self.model_id, self.attempt = db, model_id, attempt
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="beat", daemon=True)

    def start(self) -> "Beat":
        self._beat()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _beat(self) -> None:
        with self.db.session() as s:
            if not runs.beat(s, self.model_id, self.attempt):
                self.lost = True

    def _run(self) -> None:
        while not self._stop.wait(runs.BEAT_SECONDS):
            with contextlib.suppress(Exception):  # a DB hiccup: the next beat retries
                self._beat()


@dataclass(frozen=True)
class RunContext:
    db: Database
    store: BlobStore
    run: TinkerModel
    workdir: Path


def _checkpoint(db: Database, checkpoint_id: str) -> TinkerCheckpoint:
    with db.session() as s:
        row = s.scalar(select(TinkerCheckpoint).where(TinkerCheckpoint.id == checkpoint_id))
        if row is None:
            raise BadRequest("The saved state was deleted before it could be loaded.")
        s.expunge(row)
        return row


def execute(trainer: Trainer, request: TinkerFuture,
            ctx: RunContext) -> tuple[dict[str, Any] | None, bytes | None]:
    """The request's answer: a JSON result, or a forward_backward's protobuf."""
    if request.kind == "load_weights":
        assert request.request is not None
        checkpoint = _checkpoint(ctx.db, request.request["checkpoint_id"])
        checkpoints.load(ctx.store, checkpoint, trainer.model, trainer.optimizer,
                         bool(request.request["optimizer"]), ctx.workdir)
        trainer.weights_lost = False
        return {"type": "load_weights", "path": checkpoint.path, "model_id": ctx.run.id}, None
    if trainer.weights_lost:
        raise BadRequest("This run's trainer was restarted and its weights since the last "
                         "save_state are gone; load a saved state (load_state) to go on.")
    if request.kind == "forward_backward":
        assert request.payload is not None
        return None, trainer.forward_backward(decode_forward_backward(request.payload))
    if request.kind == "optim_step":
        assert request.request is not None
        return trainer.optim_step(request.request["adam_params"]), None
    if request.kind in SAVES:
        assert request.request is not None
        return checkpoints.save(ctx.db, ctx.store, ctx.run, trainer.model, trainer.optimizer,
                                SAVES[request.kind], request.request, ctx.workdir), None
    raise BadRequest(f"Requests of kind '{request.kind}' are not supported here.")


# Requests that save the run's weights, and the checkpoint kind each makes.
SAVES = {"save_weights": "weights", "save_weights_for_sampler": "sampler",
         "save_weights_external": "external"}


def serve(ctx: RunContext, attempt: int, trainer: Trainer, beat: Beat) -> None:
    """Runs the run's requests in order until the session ends or another trainer holds it."""
    db, model_id = ctx.db, ctx.run.id
    with db.session() as s:
        expected = futures.last_done_seq_id(s, model_id) + 1
    waiting_since: float | None = None
    while not beat.lost:
        with db.session() as s:
            run = s.scalar(select_run(model_id))
            if run is None or not sessions.session_live(s, run.session_id):
                log.info("the run or its session has ended; stopping")
                return
            request = futures.next_request(s, model_id)
            if request is not None:
                s.expunge(request)
        if request is None or request.seq_id is None:
            time.sleep(POLL_SECONDS)
            continue
        if request.seq_id > expected:
            waiting_since = waiting_since or time.monotonic()
            if time.monotonic() - waiting_since < GAP_SECONDS:
                time.sleep(POLL_SECONDS)
                continue
            log.warning("request %s never arrived; going on with %s", expected, request.seq_id)
        waiting_since = None
        _answer(ctx, attempt, trainer, request)
        expected = max(expected, request.seq_id + 1)


def select_run(model_id: str) -> Select[TinkerModel]:
    return select(TinkerModel).where(TinkerModel.id == model_id)


def _answer(ctx: RunContext, attempt: int, trainer: Trainer,
            request: TinkerFuture) -> None:
    started = time.monotonic()
    try:
        result, proto = execute(trainer, request, ctx)
        status = FutureStatus.SUCCEEDED
    except BadRequest as exc:
        result, proto, status = futures.user_error(str(exc)), None, FutureStatus.SUCCEEDED
    except Exception as exc:
        log.exception("request %s (%s) failed", request.id, request.kind)
        result, proto = futures.server_error(f"The request failed with an internal error "
                                             f"({type(exc).__name__})."), None
        status = FutureStatus.FAILED
    with ctx.db.session() as s:
        futures.finish(s, request.id, status, result=result, result_proto=proto,
                       model_id=ctx.run.id, attempt=attempt)
    log.info("request %s (%s, seq %s) answered in %.2f s", request.id, request.kind,
             request.seq_id, time.monotonic() - started)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s",
                        force=True)
    model_id, attempt = argv[0], int(argv[1])
    settings = TrainingSettings()
    os.umask(0o077)
    db = settings.open_database()
    beat = Beat(db, model_id, attempt).start()
    try:
        if beat.lost:
            return 0
        with db.session() as s:
            run = s.scalar(select_run(model_id))
            assert run is not None  # it held the run a moment ago
            s.expunge(run)
        with db.session() as s:
            trained = futures.answered_any(s, model_id)
        with tempfile.TemporaryDirectory(prefix="tuneserve-tinker-") as workdir:
            trainer = load_trainer(run, settings, Path(workdir))
            # The weights the run had were in the memory of the trainer before this one.
            trainer.weights_lost = trained
            log.info("trainer for %s (attempt %s) ready", model_id, attempt)
            serve(RunContext(db, open_blob_store(settings), run, Path(workdir)), attempt,
                  trainer, beat)
        return 0
    finally:
        beat.stop()


if __name__ == "__main__":
    sys.exit(main())
