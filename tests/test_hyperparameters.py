"""The `auto` rules a job resolves at validation: what learning rate, sequence length and LoRA
shape a user who leaves everything `auto` gets."""

import pytest

from training.hyperparameters import ModelShape, resolve

SMOLLM2_135M = ModelShape.of({"hidden_size": 576, "intermediate_size": 1536,
                              "num_hidden_layers": 30, "vocab_size": 49152,
                              "model_type": "llama"})
LLAMA_7B = ModelShape.of({"hidden_size": 4096, "intermediate_size": 11008,
                          "num_hidden_layers": 32, "vocab_size": 32000, "model_type": "llama"})
QWEN_7B = ModelShape(hidden_size=3584, model_type="qwen2", parameters=7_600_000_000)


def auto(method: str = "supervised", shape: ModelShape = SMOLLM2_135M, n_examples: int = 150,
         longest: int = 90, **given: object) -> dict[str, object]:
    return resolve(method, given, n_examples=n_examples, longest_example=longest,
                   context_length=8192, shape=shape).as_dict()


def test_the_rate_falls_with_the_model_width_and_meets_qlora_at_7b() -> None:
    small, large = auto()["learning_rate"], auto(shape=LLAMA_7B)["learning_rate"]
    assert 1e-3 <= small <= 2e-3  # a 135M model needs ~5x the 7B rate to learn in 3 epochs
    assert 2e-4 <= large <= 3e-4  # the usual QLoRA rate for 7B-class Llamas
    # Qwen's fitted exponent is flat: its 7B keeps nearly the reference rate.
    assert 4e-4 <= auto(shape=QWEN_7B)["learning_rate"] <= 6e-4


def test_alpha_and_rank_stay_consistent_with_the_rate() -> None:
    default = auto()
    assert (default["lora_rank"], default["lora_alpha"]) == (16, 32)
    # The rate is about rank-independent at a fixed alpha; a smaller alpha gets more rate.
    assert auto(lora_rank=64)["learning_rate"] == default["learning_rate"]
    assert auto(lora_alpha=16)["learning_rate"] == pytest.approx(2 * default["learning_rate"],
                                                                 rel=0.01)


def test_short_runs_get_a_higher_multiplier_and_dpo_a_lower_rate() -> None:
    assert auto(n_examples=150)["learning_rate_multiplier"] == 1.0  # 450 steps
    short = auto(n_examples=20, n_epochs=2, batch_size=4)  # 10 steps
    assert short["learning_rate_multiplier"] == 2.0
    assert short["learning_rate"] == pytest.approx(2 * auto()["learning_rate"], rel=0.01)
    assert auto("dpo")["learning_rate"] == pytest.approx(auto()["learning_rate"] / 4, rel=0.01)
    # A multiplier the user sent is kept as sent, and scales the reference rate.
    given = auto(learning_rate_multiplier=0.5)
    assert given["learning_rate_multiplier"] == 0.5
    assert given["learning_rate"] == pytest.approx(auto()["learning_rate"] / 2, rel=0.01)


def test_qlora_by_default_only_where_the_base_is_big_enough_to_need_it() -> None:
    assert 1.3e8 < SMOLLM2_135M.parameters < 1.6e8 and 6e9 < LLAMA_7B.parameters < 7e9
    assert auto()["use_qlora"] is False
    assert auto(shape=LLAMA_7B)["use_qlora"] is True
    assert auto(use_qlora=True)["use_qlora"] is True


@pytest.mark.parametrize(("longest", "expected"), [(90, 128), (128, 128), (5000, 5056),
                                                   (9000, 8192)])
def test_sequence_length_fits_the_longest_example(longest: int, expected: int) -> None:
    assert auto(longest=longest)["max_seq_length"] == expected
    assert auto(longest=longest, max_seq_length=4096)["max_seq_length"] == 4096


def test_the_default_rank_never_exceeds_what_the_server_serves() -> None:
    from api.fine_tuning.jobs.service import _check_rank

    for max_rank, expected in ((64, 16), (8, 8)):
        method = {"type": "supervised", "supervised": {"hyperparameters": {}}}
        _check_rank(method, max_rank)
        assert method["supervised"]["hyperparameters"]["lora_rank"] == expected


def test_dpo_resolves_its_sft_term_and_other_methods_have_none() -> None:
    from training.hyperparameters import DEFAULT_RPO_ALPHA

    assert auto("dpo")["rpo_alpha"] == DEFAULT_RPO_ALPHA
    assert auto("dpo", rpo_alpha=0)["rpo_alpha"] == 0
    assert "rpo_alpha" not in auto() and "rpo_alpha" not in auto("reinforcement")
