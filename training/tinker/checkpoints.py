"""A Tinker run's weights saved by its trainer: the LoRA as a PEFT adapter (the files a job's
adapter has, so serving loads it the same way) under `tinker/{project}/{checkpoint}/` in the
blob store, and its `tinker_checkpoints` row; a save without a name also opens a sampling
session on it (`tinker_samplers`), as the SDK's `save_weights_and_get_sampling_client`
expects. External weights (`save_weights_external`) are the adapter for the client to
download, each file age-encrypted to the request's recipients when it names any (`.age`)."""

import secrets
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from storage.blob import BlobStore
from storage.db import Database
from storage.ids import new_id
from storage.keys import ADAPTER_FILES, tinker_checkpoint_prefix
from storage.models import TinkerCheckpoint, TinkerModel, TinkerSampler
from training.tinker.wire import BadRequest

# The optimizer's moments, beside the adapter in a training state (`save_state`).
OPTIMIZER_FILE = "optimizer.pt"
# Where each kind's paths live, as the SDK names them.
KIND_DIRS = {"weights": "weights", "sampler": "sampler_weights", "external": "external_weights"}
# The suffix of an age-encrypted file, as the cookbook's download expects it.
AGE_SUFFIX = ".age"


def tinker_path(model_id: str, kind: str, name: str) -> str:
    return f"tinker://{model_id}/{KIND_DIRS[kind]}/{name}"


def save(db: Database, store: BlobStore, run: TinkerModel, model: Any, optimizer: Any,
         kind: str, request: dict[str, Any], workdir: Path) -> dict[str, Any]:
    """Saves the run's weights as `kind` and answers as the SDK reads it: `{"path"}`, or for
    a save without a name `{"sampling_session_id"}`."""
    import torch

    checkpoint_id = new_id("ckpt-")
    name = request.get("name") or checkpoint_id
    path = tinker_path(run.id, kind, name)
    with db.session() as s:
        taken = s.scalar(select(TinkerCheckpoint.id).where(TinkerCheckpoint.path == path))
    if taken is not None and not request.get("overwrite"):
        raise BadRequest(f"A checkpoint '{name}' of this run exists; pass overwrite=True or "
                         "another name.")
    local = workdir / checkpoint_id
    model.save_pretrained(str(local))
    names = list(ADAPTER_FILES)
    if kind == "weights":
        torch.save(optimizer.state_dict(), local / OPTIMIZER_FILE)
        names.append(OPTIMIZER_FILE)
    if kind == "external" and request.get("age_encryption_recipients"):
        names = _encrypted(local, names, request["age_encryption_recipients"])
    prefix = tinker_checkpoint_prefix(run.project_id, checkpoint_id)
    store.upload_dir(local, prefix, names=names)
    size = sum((local / n).stat().st_size for n in names)
    now = int(time.time())
    ttl = request.get("ttl_seconds")
    with db.session() as s:
        replaced = s.scalar(select(TinkerCheckpoint).where(TinkerCheckpoint.path == path))
        if replaced is not None:
            s.delete(replaced)
            s.flush()
        s.add(TinkerCheckpoint(
            id=checkpoint_id, project_id=run.project_id, model_id=run.id, kind=kind,
            name=name, path=path, base_model=run.base_model, lora_config=run.lora_config,
            blob_prefix=prefix,
            size_bytes=size, user_metadata=request.get("user_metadata") or {},
            created_at=now, expires_at=now + ttl if ttl else None,
            download_secret=secrets.token_hex(32) if kind == "external" else None))
        sampler_id = None
        if request.get("sampling_session_seq_id") is not None:
            sampler_id = new_id("sampler-")
            s.add(TinkerSampler(id=sampler_id, project_id=run.project_id,
                                session_id=run.session_id,
                                session_seq_id=int(request["sampling_session_seq_id"]),
                                base_model=run.base_model, model_path=path, created_at=now))
        s.commit()
    if replaced is not None:
        store.delete_prefix(replaced.blob_prefix)
    if sampler_id is not None:
        return {"type": "save_weights_for_sampler", "sampling_session_id": sampler_id}
    if kind == "external":
        return {"type": "save_weights_external", "path": path, "size_bytes": size}
    return {"type": "save_weights" if kind == "weights" else "save_weights_for_sampler",
            "path": path}


def _encrypted(local: Path, names: list[str], recipients: list[str]) -> list[str]:
    """Each file age-encrypted to the recipients, as `{name}.age`; the plain files go."""
    import pyrage

    keys = [parse_recipient(r) for r in recipients]
    out = []
    for name in names:
        plain = local / name
        (local / (name + AGE_SUFFIX)).write_bytes(pyrage.encrypt(plain.read_bytes(), keys))
        plain.unlink()
        out.append(name + AGE_SUFFIX)
    return out


def parse_recipient(recipient: str) -> Any:
    """An age recipient: a native `age1...` key or an SSH public key (BadRequest if neither:
    the API checks a request's recipients with this before it is queued)."""
    import pyrage

    kind = pyrage.ssh.Recipient if recipient.startswith("ssh-") else pyrage.x25519.Recipient
    try:
        return kind.from_str(recipient)
    except pyrage.RecipientError as exc:
        raise BadRequest(f"'{recipient[:80]}' is not an age recipient ({exc}).") from exc


def load(store: BlobStore, checkpoint: TinkerCheckpoint, model: Any, optimizer: Any,
         with_optimizer: bool, workdir: Path) -> None:
    """Puts a saved state's LoRA (and, asked, its optimizer state) into the run; gradients
    not yet applied are dropped."""
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    local = workdir / f"load-{checkpoint.id}"
    store.download_prefix(checkpoint.blob_prefix, local)
    # peft annotates the result as `namedtuple`; it is torch's (missing, unexpected) keys.
    loaded: Any = set_peft_model_state_dict(model, load_file(local / ADAPTER_FILES[1]))
    if loaded.unexpected_keys:
        raise BadRequest(f"The weights at {checkpoint.path} do not fit this run's LoRA.")
    if with_optimizer:
        if not (local / OPTIMIZER_FILE).is_file():
            raise BadRequest(f"{checkpoint.path} holds no optimizer state.")
        optimizer.load_state_dict(torch.load(local / OPTIMIZER_FILE, weights_only=True))
    optimizer.zero_grad(set_to_none=True)
