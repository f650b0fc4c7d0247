"""Sharing a fine-tuned model across projects (`fine_tuning.checkpoints.permissions`): a
granted project chats with it and fine-tunes from it; every other project still gets 404;
only the owner manages the grants; a revoked grant ends access at once."""

import openai
import pytest

from tests.support.server import TuneserveServer
from tests.support.training import jsonl, sft_example

ASK = [{"role": "user", "content": "What is 4 plus 4?"}]


def _project_id(server: TuneserveServer, name: str) -> str:
    return next(row["project_id"] for row in server.api_keys() if row["project"] == name)


def test_a_granted_project_uses_the_checkpoint_and_no_one_else(
        local_server: TuneserveServer, sft_job: object) -> None:
    owner = local_server.client()
    # A checkpoint of the shared run that no other test deleted.
    prefix = sft_job.fine_tuned_model + ":ckpt-step-"  # type: ignore[attr-defined]
    checkpoint = next(m.id for m in owner.models.list() if m.id.startswith(prefix))
    partner_key = local_server.other_key()
    stranger_key = local_server.cli("keys", "create", "--project", "stranger").strip()
    partner, stranger = local_server.client(partner_key), local_server.client(stranger_key)
    partner_id = _project_id(local_server, "other-team")

    # Before any grant the partner is a stranger too.
    with pytest.raises(openai.NotFoundError):
        partner.chat.completions.create(model=checkpoint, messages=ASK, max_tokens=4)  # type: ignore[arg-type]

    granted = owner.fine_tuning.checkpoints.permissions.create(checkpoint,
                                                               project_ids=[partner_id])
    (permission,) = granted.data
    assert permission.project_id == partner_id and permission.object == "checkpoint.permission"
    again = owner.fine_tuning.checkpoints.permissions.create(checkpoint, project_ids=[partner_id])
    assert [p.id for p in again.data] == [permission.id]  # idempotent
    listed = owner.fine_tuning.checkpoints.permissions.retrieve(checkpoint)
    assert [p.id for p in listed.data] == [permission.id]

    answer = partner.chat.completions.create(model=checkpoint, messages=ASK, max_tokens=8,  # type: ignore[arg-type]
                                             temperature=0)
    assert answer.model == checkpoint and answer.choices[0].message.content
    shared = partner.models.retrieve(checkpoint)
    assert shared.owned_by == "default"
    assert checkpoint in {m.id for m in partner.models.list()}
    training = partner.files.create(file=("t.jsonl", jsonl([sft_example(i) for i in range(8)])),
                                    purpose="fine-tune")
    job = partner.fine_tuning.jobs.create(model=checkpoint, training_file=training.id)
    assert job.model == checkpoint
    partner.fine_tuning.jobs.cancel(job.id)

    # Using is not managing: the grants, the weights and the model stay the owner's.
    for manage in (lambda c: c.fine_tuning.checkpoints.permissions.retrieve(checkpoint),
                   lambda c: c.fine_tuning.checkpoints.permissions.create(
                       checkpoint, project_ids=[partner_id]),
                   lambda c: c.models.delete(checkpoint)):
        with pytest.raises(openai.NotFoundError):
            manage(partner)
    with local_server.http(partner_key) as http:
        assert http.get(f"/models/{checkpoint}/adapter").status_code == 404

    # Anyone not granted: as if it did not exist.
    with pytest.raises(openai.NotFoundError):
        stranger.chat.completions.create(model=checkpoint, messages=ASK, max_tokens=4)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        stranger.models.retrieve(checkpoint)
    with pytest.raises(openai.BadRequestError):
        stranger.fine_tuning.jobs.create(model=checkpoint, training_file=training.id)

    deleted = owner.fine_tuning.checkpoints.permissions.delete(
        permission.id, fine_tuned_model_checkpoint=checkpoint)
    assert deleted.deleted and deleted.id == permission.id
    with pytest.raises(openai.NotFoundError):
        partner.chat.completions.create(model=checkpoint, messages=ASK, max_tokens=4)  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        owner.fine_tuning.checkpoints.permissions.delete(
            permission.id, fine_tuned_model_checkpoint=checkpoint)


@pytest.mark.parametrize("project_ids, message", [
    ([], "project_ids"),
    (["proj_nope"], "No such project: 'proj_nope'"),
    ("own", "cannot be granted its own model"),
])
def test_bad_grants_are_400s_naming_the_field(local_server: TuneserveServer, sft_job: object,
                                              project_ids: object, message: str) -> None:
    owner = local_server.client()
    model = sft_job.fine_tuned_model  # type: ignore[attr-defined]
    if project_ids == "own":
        project_ids = [sft_job.organization_id]  # type: ignore[attr-defined]
    with pytest.raises(openai.BadRequestError) as info:
        owner.fine_tuning.checkpoints.permissions.create(model, project_ids=project_ids)  # type: ignore[arg-type]
    error = info.value.body
    assert isinstance(error, dict) and error["param"] == "project_ids", error
    assert message in error["message"]


def test_a_model_named_after_a_slashed_base_is_looked_up(local_server: TuneserveServer) -> None:
    # Bases may be named like `Org/Model`: the route takes the whole name, so an unknown one
    # is that checkpoint's 404, not an unknown URL.
    client = local_server.client()
    name = "ft:Org/Base-1B:default::abc123"
    for call in (lambda: client.fine_tuning.checkpoints.permissions.retrieve(name),
                 lambda: client.fine_tuning.checkpoints.permissions.create(
                     name, project_ids=["proj_x"]),
                 lambda: client.fine_tuning.checkpoints.permissions.delete(
                     "cp_x", fine_tuned_model_checkpoint=name)):
        with pytest.raises(openai.NotFoundError) as missing:
            call()
        assert missing.value.body["param"] == "fine_tuned_model_checkpoint"  # type: ignore[index]
