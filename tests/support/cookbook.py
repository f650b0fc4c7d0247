"""A small launcher for tinker-cookbook's trainers (`supervised/train.py`, `rl/train.py`),
run unchanged against tuneserve on its default CPU model with local data: the cookbook knows
only hub models, so this registers SmolLM2's tokenizer (from the prepared model's folder) and
a renderer for its ChatML chat format, writes a tiny chat dataset, and defines a toy RL
environment. Nothing comes from the hub."""

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import chz
import tinker
from tinker_cookbook import renderers
from tinker_cookbook.renderers.base import (
    Message,
    ParseTermination,
    RenderContext,
    RenderedMessage,
    Renderer,
    ToolSpec,
    ensure_text,
    parse_response_for_stop_token,
)
from tinker_cookbook.rl import train as rl_train
from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
from tinker_cookbook.rl.types import EnvGroupBuilder, RLDataset, RLDatasetBuilder
from tinker_cookbook.supervised import train as sl_train
from tinker_cookbook.supervised.data import FromConversationFileBuilder
from tinker_cookbook.supervised.types import ChatDatasetBuilderCommonConfig
from tinker_cookbook.tokenizer_utils import register_tokenizer

RENDERER = "tuneserve/smollm2_chatml"


class ChatMLRenderer(Renderer):
    """SmolLM2-Instruct's chat format: `<|im_start|>{role}\\n{content}<|im_end|>\\n`."""

    @property
    def has_extension_property(self) -> bool:
        return True

    def _encode(self, text: str) -> list[int]:
        tokens: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return tokens

    def render_message(self, message: Message, ctx: RenderContext) -> RenderedMessage:
        header = tinker.types.EncodedTextChunk(
            tokens=self._encode(f"<|im_start|>{message['role']}\n"))
        output = tinker.types.EncodedTextChunk(
            tokens=self._encode(ensure_text(message["content"]) + "<|im_end|>\n"))
        return RenderedMessage(header=header, output=[output])

    @property
    def _end_token(self) -> int:
        return self._encode("<|im_end|>")[0]

    @property
    def _bos_tokens(self) -> list[int]:
        return []

    def get_stop_sequences(self) -> list[int]:
        return [self._end_token]

    def parse_response(self, response: list[int]) -> tuple[Message, ParseTermination]:
        return parse_response_for_stop_token(response, self.tokenizer, self._end_token)

    def create_conversation_prefix_with_tools(self, tools: list[ToolSpec],
                                              system_prompt: str = "") -> list[Message]:
        raise NotImplementedError("the launcher's runs use no tools")


def register(model_name: str, model_dir: Path) -> None:
    """The cookbook's `get_tokenizer(model_name)` and `get_renderer(RENDERER)` for SmolLM2."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    register_tokenizer(model_name, lambda: tokenizer)
    renderers.register_renderer(RENDERER, lambda tok, _processor=None: ChatMLRenderer(tok))


# The tiny chat dataset: each city's made-up code, the answer the model must learn.
CODES = {"Nice": "N-17", "Lyon": "L-42", "Oslo": "O-08", "Rome": "R-91",
         "Lima": "L-55", "Bern": "B-23", "Kyiv": "K-64", "Riga": "R-30"}


def write_chat_dataset(path: Path) -> Path:
    with path.open("w") as f:
        for city, code in CODES.items():
            f.write(json.dumps({"messages": [
                {"role": "user", "content": f"What is the code of {city}?"},
                {"role": "assistant", "content": code}]}) + "\n")
    return path


def supervised(base_url: str, model_name: str, data: Path, log_path: Path, steps: int,
               learning_rate: float = 5e-3) -> None:
    """The cookbook's supervised trainer, as `recipes/sl_basic.py` builds it."""
    config = sl_train.Config(
        log_path=str(log_path), model_name=model_name, recipe_name="tuneserve_launcher",
        renderer_name=RENDERER, base_url=base_url, learning_rate=learning_rate,
        lr_schedule="constant", num_epochs=steps, lora_rank=8, save_every=0, eval_every=0,
        dataset_builder=FromConversationFileBuilder(
            file_path=str(data), common_config=ChatDatasetBuilderCommonConfig(
                model_name_for_tokenizer=model_name, renderer_name=RENDERER,
                max_length=64, batch_size=len(CODES))))
    asyncio.run(sl_train.main(config))


# The toy RL environment: answer "yes". The reward is 1 for a reply that says it.
class SayYes(ProblemEnv):
    def get_question(self) -> str:
        return "Reply with one word: yes or no?"

    def check_answer(self, sample_str: str) -> bool:
        return "yes" in sample_str.lower()

    def check_format(self, sample_str: str) -> bool:
        return bool(sample_str.strip())

    def get_reference_answer(self) -> str:
        return "yes"


class SayYesDataset(RLDataset):
    def __init__(self, renderer: Renderer, batches: int, group: int) -> None:
        self.renderer, self.batches, self.group = renderer, batches, group

    def get_batch(self, index: int) -> Sequence[EnvGroupBuilder]:
        return [ProblemGroupBuilder(env_thunk=lambda: SayYes(self.renderer, format_coef=0.0),
                                    num_envs=self.group, dataset_name="say_yes")
                for _ in range(2)]

    def __len__(self) -> int:
        return self.batches


@chz.chz
class SayYesBuilder(RLDatasetBuilder):
    model_name: str
    batches: int
    group: int

    async def __call__(self) -> tuple[RLDataset, RLDataset | None]:
        from tinker_cookbook.tokenizer_utils import get_tokenizer

        renderer = renderers.get_renderer(RENDERER, get_tokenizer(self.model_name))
        return SayYesDataset(renderer, self.batches, self.group), None


def reinforcement(base_url: str, model_name: str, log_path: Path, steps: int,
                  **overrides: Any) -> None:
    """The cookbook's RL trainer (`recipes/rl_basic.py`'s loss, importance sampling)."""
    config = rl_train.Config(
        log_path=str(log_path), model_name=model_name, recipe_name="tuneserve_launcher",
        renderer_name=RENDERER, base_url=base_url, learning_rate=overrides.pop("lr", 3e-3),
        max_tokens=4, lora_rank=8, eval_every=0, save_every=0,
        dataset_builder=SayYesBuilder(model_name=model_name, batches=steps, group=8),
        **overrides)
    asyncio.run(rl_train.main(config))
