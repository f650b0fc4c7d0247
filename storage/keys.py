"""Where each kind of object lives in the blob store. The one place that knows the layout."""


# The files of a servable PEFT adapter, wherever it is stored (a job's model or checkpoint, a
# Tinker run's saved weights): what serving loads.
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def file_key(project_id: str, file_id: str) -> str:
    return f"files/{project_id}/{file_id}"


def upload_prefix(project_id: str, upload_id: str) -> str:
    return f"uploads/{project_id}/{upload_id}/"


def upload_part_key(project_id: str, upload_id: str, part_id: str) -> str:
    return upload_prefix(project_id, upload_id) + part_id


def job_prefix(project_id: str, job_id: str) -> str:
    """Everything a job keeps while it runs (its resumable training state)."""
    return f"jobs/{project_id}/{job_id}/"


def tinker_checkpoint_prefix(project_id: str, checkpoint_id: str) -> str:
    """A Tinker run's saved weights: a PEFT adapter (and, for a training state, the
    optimizer's), named by the checkpoint's server id, never by the client's name."""
    return f"tinker/{project_id}/{checkpoint_id}/"


def adapter_prefix(project_id: str, model_key: str) -> str:
    """A servable PEFT adapter; `model_key` is made of the job's id and attempt, plus
    `-ckpt-step-N` for a checkpoint (`training.jobs.model_key`). Read back only from the
    model's row (`FineTunedModel.adapter_prefix`), which keeps adapters stored under an older
    layout found."""
    return f"adapters/{project_id}/{model_key}/"
