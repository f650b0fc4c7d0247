"""A checkpoint's metrics as the openai client reads them, whatever the job logged."""

from openai.types.fine_tuning.jobs import FineTuningJobCheckpoint

from api.fine_tuning.jobs.checkpoints.schemas import FineTuningJobCheckpointObject
from storage.models import JobCheckpoint


def test_a_reinforcement_checkpoint_s_per_grader_rewards_are_numbers_of_their_own() -> None:
    row = JobCheckpoint(
        id="ftckpt_1", job_id="ftjob-1", created_at=1, step_number=2,
        fine_tuned_model_checkpoint="ft:base:default::abc:ckpt-step-2",
        metrics={"step": 2, "train_loss": 0.5, "valid_loss": None, "valid_reward_mean": 0.25,
                 "valid_rewards": {"mix": 0.25, "mix.judge": 0.5}, "valid_reward_std": None})
    listed = FineTuningJobCheckpoint.model_validate(
        FineTuningJobCheckpointObject.of(row).model_dump())
    assert listed.metrics.step == 2 and listed.metrics.train_loss == 0.5
    assert listed.metrics.model_extra == {"valid_reward_mean": 0.25, "valid_rewards_mix": 0.25,
                                          "valid_rewards_mix.judge": 0.5}
