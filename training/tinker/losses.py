"""The Tinker API's built-in losses, as its documentation defines them: each a sum over a
datum's tokens (never a mean), on the learner's log-probabilities `lp` of the target tokens.
With r = exp(lp - sampler's logprobs) and A the advantages:

    cross_entropy        -(lp * weights).sum()
    importance_sampling  -(r * A).sum()
    ppo                  -min(r * A, clip(r, low, high) * A).sum()
    cispo                -(stop_gradient(clip(r, low, high)) * lp * A).sum()
    dro                  -(lp * A - beta / 2 * (lp - sampler's logprobs) ** 2).sum()

`low`/`high` are `loss_fn_config`'s `clip_low_threshold`/`clip_high_threshold` (0.8 and 1.2
when absent: the documented epsilon of 0.2); dro's `beta` defaults to 0.05."""

from collections.abc import Callable, Mapping

import torch

from training.tinker.wire import BadRequest

Inputs = Mapping[str, torch.Tensor]
Loss = Callable[[torch.Tensor, Inputs, Mapping[str, float]], torch.Tensor]

CLIP_LOW = 0.8
CLIP_HIGH = 1.2
DRO_BETA = 0.05


def cross_entropy(lp: torch.Tensor, x: Inputs, config: Mapping[str, float]) -> torch.Tensor:
    weights = x.get("weights")
    return -(lp if weights is None else lp * weights).sum()


def _ratio(lp: torch.Tensor, x: Inputs) -> torch.Tensor:
    return torch.exp(lp - x["logprobs"])


def _clip(config: Mapping[str, float]) -> tuple[float, float]:
    return (float(config.get("clip_low_threshold", CLIP_LOW)),
            float(config.get("clip_high_threshold", CLIP_HIGH)))


def importance_sampling(lp: torch.Tensor, x: Inputs,
                        config: Mapping[str, float]) -> torch.Tensor:
    return -(_ratio(lp, x) * x["advantages"]).sum()


def ppo(lp: torch.Tensor, x: Inputs, config: Mapping[str, float]) -> torch.Tensor:
    ratio, advantages = _ratio(lp, x), x["advantages"]
    low, high = _clip(config)
    return -torch.minimum(ratio * advantages, ratio.clamp(low, high) * advantages).sum()


def cispo(lp: torch.Tensor, x: Inputs, config: Mapping[str, float]) -> torch.Tensor:
    low, high = _clip(config)
    weight = _ratio(lp, x).clamp(low, high).detach()
    return -(weight * lp * x["advantages"]).sum()


def dro(lp: torch.Tensor, x: Inputs, config: Mapping[str, float]) -> torch.Tensor:
    beta = float(config.get("beta", DRO_BETA))
    return -(lp * x["advantages"] - beta / 2 * (lp - x["logprobs"]) ** 2).sum()


# Each loss, and the loss_fn_inputs it reads besides `target_tokens`.
LOSSES: dict[str, tuple[Loss, frozenset[str]]] = {
    "cross_entropy": (cross_entropy, frozenset()),
    "importance_sampling": (importance_sampling, frozenset({"logprobs", "advantages"})),
    "ppo": (ppo, frozenset({"logprobs", "advantages"})),
    "cispo": (cispo, frozenset({"logprobs", "advantages"})),
    "dro": (dro, frozenset({"logprobs", "advantages"})),
}


def loss_for(name: str, input_names: set[str], index: int = 0) -> Loss:
    """The loss `name`, checked against the inputs a datum brings."""
    if name not in LOSSES:
        raise BadRequest(f"loss_fn '{name}' is not supported here; supported: "
                         f"{', '.join(LOSSES)}.")
    loss, needs = LOSSES[name]
    missing = sorted((needs | {"target_tokens"}) - input_names)
    if missing:
        raise BadRequest(f"data[{index}].loss_fn_inputs lacks {', '.join(missing)}, which "
                         f"loss_fn '{name}' needs.")
    return loss
