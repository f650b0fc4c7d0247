"""`tuneserve export`: a fine-tuned model as files an operator takes anywhere: its PEFT
adapter folder, the merged model as a Hugging Face folder (safetensors), or one GGUF file
(f16 or q8_0) for llama.cpp and Ollama.

GGUF is written with `gguf`, llama.cpp's own Python library: its tensor-name map, its
quantizer and its writer. What the weights alone do not say (the tokenizer's vocabulary,
merges and pre-tokenizer, the chat template, the architecture's fields) is taken from the
GGUF the base model was prepared from, so llama.cpp reads the tokenizer it shipped with."""

import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

import numpy as np

from storage.base_models import BaseModelSpec
from storage.blob import BlobStore

Format = Literal["peft", "merged", "gguf"]
GGUFType = Literal["f16", "q8_0"]


def file_name_for(model_id: str) -> str:
    """A model's name as a file or folder name (`ft:a:b` -> `ft-a-b`): the download's folder
    and the export's file are named alike."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", model_id).strip("-")


class ExportError(Exception):
    """Said to the operator as is."""


def export_model(store: BlobStore, adapter_prefix: str, base: BaseModelSpec, fmt: Format,
                 out: Path, gguf_type: GGUFType = "q8_0", name: str = "model",
                 gguf_source: Path | None = None) -> Path:
    """Writes the export under `out` (a folder; for gguf, the file in it) and returns it."""
    if fmt == "gguf" and gguf_source is None:
        raise ExportError(f"GGUF export needs the GGUF that base {base.name!r} was prepared "
                          "from (only the default base has one); export `merged` and convert "
                          "it with llama.cpp's convert_hf_to_gguf.py")
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out, prefix=".export-") as tmp:
        adapter = Path(tmp) / "adapter"
        store.download_prefix(adapter_prefix, adapter)
        if not (adapter / "adapter_config.json").exists():
            raise ExportError("the model's adapter files are missing from the blob store")
        if fmt == "peft":
            return _replace(adapter, out / "adapter")
        model, tokenizer = _merged(base, adapter)
        if fmt == "merged":
            merged = Path(tmp) / "merged"
            model.save_pretrained(merged, safe_serialization=True)
            tokenizer.save_pretrained(merged)
            return _replace(merged, out / "merged")
        assert gguf_source is not None
        target = out / f"{name}.{gguf_type}.gguf"
        partial = Path(tmp) / target.name
        write_gguf(model, gguf_source, partial, gguf_type, name)
        partial.replace(target)  # whole or not at all
        return target


def _replace(src: Path, dst: Path) -> Path:
    if dst.exists():
        shutil.rmtree(dst)
    src.rename(dst)
    return dst


def _merged(base: BaseModelSpec, adapter: Path) -> tuple[Any, Any]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base.path, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    return merged, AutoTokenizer.from_pretrained(base.path)


def _unpermute_for_gguf(weight: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp keeps Llama's q/k rows in the interleaved rotary order of the original
    checkpoints; Hugging Face's are halved. The inverse of what transformers undoes on read."""
    rows = weight.shape[0]
    return (weight.reshape(n_head, 2, rows // n_head // 2, *weight.shape[1:])
            .swapaxes(1, 2).reshape(weight.shape))


def write_gguf(model: Any, source: Path, target: Path, gguf_type: GGUFType, name: str) -> None:
    import gguf
    import torch

    reader = gguf.GGUFReader(source)
    arch = reader.fields["general.architecture"].contents()
    if arch != "llama":
        raise ExportError(f"GGUF export knows Llama-architecture bases only, not {arch!r}")
    config = model.config
    writer = gguf.GGUFWriter(target, arch=arch)
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type",
                                              "general.name"):
            continue
        sub_type = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, field.contents(), field.types[0], sub_type=sub_type)
    writer.add_name(name)
    qtype = (gguf.GGMLQuantizationType.Q8_0 if gguf_type == "q8_0"
             else gguf.GGMLQuantizationType.F16)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if gguf_type == "q8_0"
                         else gguf.LlamaFileType.MOSTLY_F16)

    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.LLAMA, config.num_hidden_layers)
    expected = {t.name for t in reader.tensors}
    written = set()
    for hf_name, tensor in model.state_dict().items():
        gguf_name = names.get_name(hf_name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ExportError(f"no GGUF name for tensor {hf_name}")
        if gguf_name not in expected:  # e.g. a tied lm_head the source leaves out
            continue
        data = tensor.to(dtype=torch.float32).numpy()
        if hf_name.endswith("q_proj.weight"):
            data = _unpermute_for_gguf(data, config.num_attention_heads)
        elif hf_name.endswith("k_proj.weight"):
            data = _unpermute_for_gguf(data, config.num_key_value_heads)
        if data.ndim == 1:  # norms stay f32, as llama.cpp's converter keeps them
            writer.add_tensor(gguf_name, data)
        elif qtype is gguf.GGMLQuantizationType.Q8_0:
            writer.add_tensor(gguf_name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
        else:
            writer.add_tensor(gguf_name, data.astype(np.float16))
        written.add(gguf_name)
    missing = expected - written
    if missing:
        raise ExportError(f"the model lacks tensors the base's GGUF has: {sorted(missing)[:5]}")
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
