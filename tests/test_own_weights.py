"""Taking the weights home: a fine-tuned model's adapter downloads as a tar of its PEFT folder
(its owner only), loads in plain PEFT on the base model and answers as the server does."""

import io
import tarfile
from pathlib import Path

import httpx
import pytest

from tests.support.server import TuneserveServer
from tests.support.training import BASE

PROMPT = [{"role": "system", "content": "You answer in JSON."},
          {"role": "user", "content": "What is 5 plus 5?"}]


def _download(server: TuneserveServer, model: str, key: str | None = None) -> httpx.Response:
    with server.http(key) as http:
        return http.get(f"/models/{model}/adapter")


def _greedy(model: object, tokenizer_dir: Path, max_tokens: int) -> str:
    import torch
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    ids = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=max_tokens, do_sample=False)  # type: ignore[attr-defined]
    return tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)


def _served(server: TuneserveServer, model: str) -> tuple[str, int]:
    served = server.client().chat.completions.create(
        model=model, messages=PROMPT, max_tokens=12, temperature=0)  # type: ignore[arg-type]
    text = served.choices[0].message.content or ""
    assert text.startswith('{"answer"')  # the fine-tuned behaviour, not the base's
    return text, served.usage.completion_tokens  # type: ignore[union-attr]


def test_the_adapter_downloads_and_answers_as_served(
        local_server: TuneserveServer, sft_job: object, models_dir: Path,
        tmp_path: Path) -> None:
    model = sft_job.fine_tuned_model  # type: ignore[attr-defined]
    answer = _download(local_server, model)
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/x-tar"
    assert int(answer.headers["content-length"]) == len(answer.content)
    with tarfile.open(fileobj=io.BytesIO(answer.content)) as tar:
        names = tar.getnames()
        tar.extractall(tmp_path, filter="data")
    (folder,) = {n.split("/")[0] for n in names}
    assert {"adapter_config.json", "adapter_model.safetensors"} <= \
        {p.name for p in (tmp_path / folder).iterdir()}

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    text, tokens = _served(local_server, model)
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(
        models_dir / BASE, dtype=torch.float32), tmp_path / folder)
    assert _greedy(plain, models_dir / BASE, tokens) == text


def test_an_operator_exports_the_merged_model_and_gguf(
        local_server: TuneserveServer, sft_job: object, tmp_path: Path) -> None:
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    model = sft_job.fine_tuned_model  # type: ignore[attr-defined]
    text, tokens = _served(local_server, model)
    merged_dir = Path(local_server.cli("export", model, "--format", "merged",
                                       "--out", str(tmp_path)).strip())
    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32)
    assert _greedy(merged, merged_dir, tokens) == text

    for kind, tensor_type in (("f16", "F16"), ("q8_0", "Q8_0")):
        path = Path(local_server.cli("export", model, "--format", "gguf", "--gguf-type", kind,
                                     "--out", str(tmp_path)).strip())
        reader = gguf.GGUFReader(path)
        assert reader.fields["general.name"].contents() == path.name.split(".")[0]
        assert reader.fields["tokenizer.ggml.pre"].contents() == "smollm"
        types = {t.tensor_type.name for t in reader.tensors}
        assert types == {tensor_type, "F32"} and len(reader.tensors) == 272
    # llama.cpp's layout read back by transformers' GGUF loader answers as the server does.
    from_gguf = AutoModelForCausalLM.from_pretrained(
        tmp_path, gguf_file=next(tmp_path.glob("*.f16.gguf")).name, dtype=torch.float32)
    assert _greedy(from_gguf, merged_dir, tokens) == text


@pytest.mark.parametrize("case", ["other project", "base model", "no such model"])
def test_only_the_owner_downloads_an_adapter(local_server: TuneserveServer, sft_job: object,
                                             case: str) -> None:
    model = sft_job.fine_tuned_model  # type: ignore[attr-defined]
    if case == "other project":
        answer = _download(local_server, model, local_server.other_key())
    else:
        answer = _download(local_server, BASE if case == "base model" else "ft:nope:x:y:z")
    assert answer.status_code == 404
    error = answer.json()["error"]
    assert error["code"] == "model_not_found" and error["param"] == "model"
