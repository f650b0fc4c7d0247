"""The fine-tuning API's objects, as OpenAI names them, with our LoRA extensions beside."""

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from api.lists import Page
from storage.models import FineTuningJob, JobEvent
from training import evaluation_state

Auto = Literal["auto"]
# The suffix becomes part of a `:`-separated model name, so it cannot hold `:` or `/`.
SUFFIX = r"^[A-Za-z0-9_.-]+$"
# A job's metadata holds at most this many keys (OpenAI's bound); listing filters on as many.
MAX_METADATA_PAIRS = 16
Projection = Literal["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


class SupervisedHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"
    # Extensions (tuneserve): the LoRA adapter and the training sequence length.
    lora_rank: Annotated[int, Field(ge=1, le=64)] | None = None
    lora_alpha: Annotated[int, Field(ge=1, le=1024)] | None = None
    lora_dropout: Annotated[float, Field(ge=0, lt=1)] | None = None
    target_modules: Annotated[list[Projection], Field(min_length=1)] | None = None
    use_qlora: bool | None = None
    max_seq_length: Annotated[int, Field(ge=16, le=131_072)] | None = None


class DpoHyperparameters(SupervisedHyperparameters):
    beta: Auto | Annotated[float, Field(gt=0, le=2)] = "auto"
    # Extension (tuneserve): the weight of an SFT term on the preferred answer (RPO), 0 for
    # plain DPO (training/hyperparameters.py).
    rpo_alpha: Auto | Annotated[float, Field(ge=0, le=10)] = "auto"


class ReinforcementHyperparameters(SupervisedHyperparameters):
    # OpenAI's: more samples per prompt, and with a validation file how often its prompts
    # are answered and graded (every `eval_interval` steps, `eval_samples` answers each).
    compute_multiplier: Auto | Annotated[float, Field(gt=0, le=10)] = "auto"
    eval_interval: Auto | Annotated[int, Field(ge=1)] = "auto"
    eval_samples: Auto | Annotated[int, Field(ge=1)] = "auto"
    reasoning_effort: Literal["default", "low", "medium", "high"] | None = None
    # Extensions (tuneserve): answers sampled per prompt (GRPO's group) and their length.
    num_generations: Annotated[int, Field(ge=2, le=64)] | None = None
    max_completion_tokens: Annotated[int, Field(ge=1, le=4096)] | None = None


class Reinforcement(BaseModel):
    model_config = ConfigDict(extra="forbid")
    # Checked by the grader engine (training/graders.py), which names the bad field.
    grader: dict[str, Any]
    hyperparameters: ReinforcementHyperparameters = Field(
        default_factory=ReinforcementHyperparameters)
    response_format: dict[str, Any] | None = None


class Supervised(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: SupervisedHyperparameters = Field(default_factory=SupervisedHyperparameters)


class Dpo(BaseModel):
    model_config = ConfigDict(extra="forbid")
    hyperparameters: DpoHyperparameters = Field(default_factory=DpoHyperparameters)


class Method(BaseModel):
    type: Literal["supervised", "dpo", "reinforcement"]
    supervised: Supervised | None = None
    dpo: Dpo | None = None
    reinforcement: Reinforcement | None = None


class WandbSettings(BaseModel):
    project: str
    entity: str | None = None
    name: str | None = None
    tags: list[str] | None = None


class Integration(BaseModel):
    type: Literal["wandb"]
    wandb: WandbSettings


class LegacyHyperparameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    batch_size: Auto | Annotated[int, Field(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Auto | Annotated[float, Field(gt=0, le=100)] = "auto"
    n_epochs: Auto | Annotated[int, Field(ge=1, le=50)] = "auto"


class CreateFineTuningJobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    # As long as a fine-tuned model's name may be (`fine_tuning_jobs.model`).
    model: str = Field(min_length=1, max_length=512)
    training_file: str = Field(min_length=1)
    validation_file: str | None = None
    suffix: Annotated[str, Field(min_length=1, max_length=64, pattern=SUFFIX)] | None = None
    seed: Annotated[int, Field(ge=0, le=2_147_483_647)] | None = None
    metadata: dict[str, Annotated[str, Field(max_length=512)]] | None = None
    integrations: Annotated[list[Integration], Field(max_length=5)] | None = None
    method: Method | None = None
    hyperparameters: LegacyHyperparameters | None = None

    @field_validator("metadata")
    @classmethod
    def _metadata_limits(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        if value is not None:
            if len(value) > MAX_METADATA_PAIRS:
                raise ValueError(f"at most {MAX_METADATA_PAIRS} key-value pairs")
            if any(len(k) > 64 for k in value):
                raise ValueError("keys are at most 64 characters")
        return value


class JobError(BaseModel):
    code: str
    message: str
    param: str | None


class FineTuningJobObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job"] = "fine_tuning.job"
    created_at: int
    error: JobError | None
    fine_tuned_model: str | None
    finished_at: int | None
    hyperparameters: dict[str, Any]
    model: str
    organization_id: str
    result_files: list[str]
    seed: int
    status: str
    trained_tokens: int | None
    training_file: str
    validation_file: str | None
    estimated_finish: int | None = None
    integrations: list[dict[str, Any]] | None = None
    metadata: dict[str, str] | None = None
    method: dict[str, Any]
    user_provided_suffix: str | None = None
    # Extension (tuneserve): base vs fine-tuned model on the validation file, by grader.
    evaluation: dict[str, Any] | None = None

    @classmethod
    def of(cls, job: FineTuningJob) -> "FineTuningJobObject":
        hp = job.method.get(job.method["type"], {}).get("hyperparameters", {})
        return cls(
            id=job.id, created_at=job.created_at, error=job.error,
            fine_tuned_model=job.fine_tuned_model, finished_at=job.finished_at,
            hyperparameters={k: hp.get(k, "auto") for k in
                             ("batch_size", "learning_rate_multiplier", "n_epochs")},
            model=job.model, organization_id=job.project_id, result_files=job.result_files,
            seed=job.seed, status=job.status, trained_tokens=job.trained_tokens,
            training_file=job.training_file, validation_file=job.validation_file,
            estimated_finish=job.estimated_finish, integrations=job.integrations,
            metadata=job.user_metadata, method=job.method, user_provided_suffix=job.suffix,
            evaluation=evaluation_state.public(job),
        )


class FineTuningJobList(Page[FineTuningJobObject]):
    pass


class FineTuningJobEventObject(BaseModel):
    id: str
    object: Literal["fine_tuning.job.event"] = "fine_tuning.job.event"
    created_at: int
    level: str
    message: str
    type: str
    data: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    def of(cls, e: JobEvent) -> "FineTuningJobEventObject":
        return cls(id=e.id, created_at=e.created_at, level=e.level, message=e.message,
                   type=e.type, data=e.data or {})


class FineTuningJobEventList(Page[FineTuningJobEventObject]):
    pass
