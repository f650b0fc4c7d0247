"""tinker-cookbook 0.6.1's trainers, unchanged, against tuneserve on the default CPU model
(tests/support/cookbook.py launches them with local data): the loss falls, the reward
rises, the sampler serves the new weights, the run's checkpoints list and download; another
project sees none of it."""

import json
from pathlib import Path

import httpx
import pytest
import tinker

from tests.support.server import TuneserveServer
from tests.support.training import BASE

pytestmark = [pytest.mark.server, pytest.mark.training]


@pytest.fixture
def cookbook(chat_server: TuneserveServer, models_dir: Path,
             monkeypatch: pytest.MonkeyPatch) -> str:
    """The Tinker base URL, the SDK's key set as a user sets it, SmolLM2 registered."""
    from tests.support import cookbook

    monkeypatch.setenv("TINKER_TELEMETRY", "0")
    key = chat_server.cli("keys", "create", "--project", "cookbook", "--tinker").strip()
    monkeypatch.setenv("TINKER_API_KEY", key)
    cookbook.register(BASE, models_dir / BASE)
    return chat_server.base_url.removesuffix("/v1")


def _metrics(log_path: Path) -> list[dict[str, float]]:
    return [json.loads(line) for line in (log_path / "metrics.jsonl").read_text().splitlines()]


def test_the_cookbook_s_supervised_trainer_runs_unchanged(cookbook: str, tmp_path: Path,
                                                          chat_server: TuneserveServer) -> None:
    from tinker_cookbook.tokenizer_utils import get_tokenizer

    from tests.support.cookbook import CODES, ChatMLRenderer, supervised, write_chat_dataset

    log_path = tmp_path / "sl"
    supervised(cookbook, BASE, write_chat_dataset(tmp_path / "chat.jsonl"), log_path, steps=6)
    losses = [m["train_mean_nll"] for m in _metrics(log_path) if "train_mean_nll" in m]
    assert len(losses) == 6 and losses[-1] < 0.5 * losses[0], losses
    # Its final sampler weights answer as trained.
    final = [json.loads(line) for line in (log_path / "checkpoints.jsonl").read_text()
             .splitlines()][-1]
    client = tinker.ServiceClient(base_url=cookbook)
    sampler = client.create_sampling_client(model_path=final["sampler_path"]).result()
    renderer = ChatMLRenderer(get_tokenizer(BASE))
    prompt = renderer.build_generation_prompt(
        [{"role": "user", "content": "What is the code of Oslo?"}])
    answer = sampler.sample(prompt, 1, tinker.SamplingParams(
        max_tokens=8, temperature=0.0, stop=renderer.get_stop_sequences())).result()
    assert renderer.parse_response(answer.sequences[0].tokens)[0]["content"] == CODES["Oslo"]
    rest = tinker.RestClient(base_url=cookbook)
    run_id = final["sampler_path"].split("/")[2]
    paths = {c.tinker_path for c in rest.list_checkpoints(run_id).result().checkpoints}
    assert {final["state_path"], final["sampler_path"]} <= paths
    other = chat_server.cli("keys", "create", "--project", "cookbook-other", "--tinker").strip()
    with pytest.raises(tinker.NotFoundError):
        tinker.RestClient(base_url=cookbook, api_key=other).list_checkpoints(run_id).result()

    # The trained state downloads with the cookbook's own helper: loaded into a new run,
    # exported age-encrypted to a key it makes, fetched from signed URLs with no key,
    # decrypted, and the export deleted.
    from safetensors.numpy import load_file
    from tinker_cookbook import weights

    out = Path(weights.download(tinker_path=final["state_path"],
                                output_dir=str(tmp_path / "adapter"), base_url=cookbook))
    files = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert files == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    lora = load_file(out / "adapter_model.safetensors")
    assert any("lora_B" in k and abs(v).sum() > 0 for k, v in lora.items())  # trained
    assert not [c for c in rest.list_checkpoints(run_id).result().checkpoints
                if c.checkpoint_type == "external"]
    # The same weights exported plain: their URLs need no key, and only as signed.
    exported = (client.create_training_client_from_state(final["state_path"]).result()
                .save_weights_external("plain").result().path)
    urls = rest.get_external_weights_urls(exported).result().urls
    assert set(urls) == set(files)
    plain = httpx.get(urls["adapter_model.safetensors"], timeout=30)
    assert plain.status_code == 200
    assert plain.content == (out / "adapter_model.safetensors").read_bytes()
    url = urls["adapter_config.json"]
    forged = url[:-1] + ("0" if url[-1] != "0" else "1")
    assert httpx.get(forged, timeout=30).status_code == 403
    with pytest.raises(tinker.NotFoundError):
        tinker.RestClient(base_url=cookbook, api_key=other).get_external_weights_urls(
            exported).result()
    rest.delete_checkpoint_from_tinker_path(exported).result()
    assert httpx.get(url, timeout=30).status_code == 403  # gone with its checkpoint
    client.close("success").result()


def test_the_cookbook_s_rl_trainer_raises_the_reward(cookbook: str, tmp_path: Path) -> None:
    from tests.support.cookbook import reinforcement

    log_path = tmp_path / "rl"
    reinforcement(cookbook, BASE, log_path, steps=6)
    rewards = [m["env/all/reward/total"] for m in _metrics(log_path)
               if "env/all/reward/total" in m]
    assert len(rewards) == 6 and rewards[-1] > rewards[0], rewards
