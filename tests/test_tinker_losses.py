"""The Tinker losses' documented sums, and the protobuf messages as the official SDK writes
and reads them (in process: no engine, no server)."""

import math

import numpy as np
import pytest
import tinker
import torch
from tinker import types
from tinker.proto.request_conv import forward_backward_request_to_proto
from tinker.proto.response_conv import deserialize_forward_backward_output

from training.tinker.losses import loss_for
from training.tinker.wire import BadRequest, decode_forward_backward, encode_output

LP = [-1.0, -2.0, -0.5]
SAMPLER = [-1.2, -1.5, -0.5]
ADVANTAGES = [1.0, -1.0, 2.0]


def _loss(name: str, lp: torch.Tensor, config: dict[str, float] | None = None,
          **inputs: list[float]) -> torch.Tensor:
    tensors = {k: torch.tensor(v) for k, v in inputs.items()}
    loss = loss_for(name, {"target_tokens", *tensors})
    return loss(lp, tensors, config or {})


def test_cross_entropy_is_minus_the_weighted_sum() -> None:
    lp = torch.tensor(LP)
    assert _loss("cross_entropy", lp, weights=[1.0, 0.0, 2.0]).item() == pytest.approx(2.0)


def test_the_policy_losses_follow_their_formulas() -> None:
    ratio = [math.exp(a - b) for a, b in zip(LP, SAMPLER, strict=True)]
    x = {"logprobs": SAMPLER, "advantages": ADVANTAGES}
    lp = torch.tensor(LP)
    assert _loss("importance_sampling", lp, **x).item() == pytest.approx(
        -sum(r * a for r, a in zip(ratio, ADVANTAGES, strict=True)), rel=1e-5)
    ppo = -sum(min(r * a, min(max(r, 0.8), 1.2) * a)
               for r, a in zip(ratio, ADVANTAGES, strict=True))
    assert _loss("ppo", lp, **x).item() == pytest.approx(ppo, rel=1e-5)
    # The thresholds come from loss_fn_config.
    wide = -sum(r * a for r, a in zip(ratio, ADVANTAGES, strict=True))
    assert _loss("ppo", lp, {"clip_low_threshold": 0.0, "clip_high_threshold": 9.0},
                 **x).item() == pytest.approx(wide, rel=1e-5)
    dro = -sum(p * a - 0.1 / 2 * (p - s) ** 2
               for p, s, a in zip(LP, SAMPLER, ADVANTAGES, strict=True))
    assert _loss("dro", lp, {"beta": 0.1}, **x).item() == pytest.approx(dro, rel=1e-5)


def test_cispo_weighs_the_log_probability_by_the_clipped_ratio_without_its_gradient() -> None:
    lp = torch.tensor(LP, requires_grad=True)
    _loss("cispo", lp, logprobs=SAMPLER, advantages=ADVANTAGES).backward()
    ratio = [min(max(math.exp(a - b), 0.8), 1.2) for a, b in zip(LP, SAMPLER, strict=True)]
    assert lp.grad is not None
    assert lp.grad.tolist() == pytest.approx([-r * a for r, a in zip(ratio, ADVANTAGES,
                                                                      strict=True)], rel=1e-5)


def test_an_unknown_loss_or_a_missing_input_is_an_error_naming_it() -> None:
    with pytest.raises(BadRequest, match="'gspo'"):
        loss_for("gspo", {"target_tokens"})
    with pytest.raises(BadRequest, match="advantages"):
        loss_for("ppo", {"target_tokens", "logprobs"})


def test_the_sdk_s_forward_backward_protobuf_decodes_and_our_answer_reads_back() -> None:
    datum = tinker.Datum(
        model_input=tinker.ModelInput.from_ints([5, 6, 7]),
        loss_fn_inputs={"target_tokens": tinker.TensorData(data=[6, 7, 8], dtype="int64"),
                        "advantages": tinker.TensorData(data=[0.5, 0.5, 1.0],
                                                        dtype="float32")})
    request = types.ForwardBackwardRequest(
        model_id="s:train:0", seq_id=3,
        forward_backward_input=types.ForwardBackwardInput(
            data=[datum], loss_fn="ppo", loss_fn_config={"clip_low_threshold": 0.7}))
    decoded = decode_forward_backward(forward_backward_request_to_proto(request)
                                      .SerializeToString())
    assert (decoded.model_id, decoded.seq_id, decoded.loss_fn) == ("s:train:0", 3, "ppo")
    assert decoded.config == {"clip_low_threshold": pytest.approx(0.7)}
    assert decoded.data[0].tokens.tolist() == [5, 6, 7]
    assert decoded.data[0].inputs["advantages"].tolist() == [0.5, 0.5, 1.0]
    answer = deserialize_forward_backward_output(encode_output(
        [{"logprobs": np.array([-1.0, -2.0], np.float32)},
         {"logprobs": np.array([-3.0], np.float32)}], {"loss:sum": 6.0}))
    assert answer.metrics == {"loss:sum": 6.0}
    assert [o["logprobs"].tolist() for o in answer.loss_fn_outputs] == [[-1.0, -2.0], [-3.0]]


def test_a_body_that_is_not_the_message_or_holds_mismatched_inputs_is_refused() -> None:
    with pytest.raises(BadRequest, match="protobuf"):
        decode_forward_backward(b"\xff\xff\xff")
    datum = tinker.Datum(
        model_input=tinker.ModelInput.from_ints([5, 6, 7]),
        loss_fn_inputs={"target_tokens": tinker.TensorData(data=[6, 7], dtype="int64")})
    request = types.ForwardBackwardRequest(
        model_id="m", seq_id=1,
        forward_backward_input=types.ForwardBackwardInput(data=[datum],
                                                           loss_fn="cross_entropy"))
    with pytest.raises(BadRequest, match=r"data\[0\].loss_fn_inputs\['target_tokens'\]"):
        decode_forward_backward(forward_backward_request_to_proto(request).SerializeToString())
