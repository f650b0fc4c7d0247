"""How a Tinker sample becomes vLLM's completions request and its answer the SDK's
SampleResponse (in process; the real round trip is tests/test_tinker.py)."""

import pytest
from tinker.proto.response_conv import deserialize_sample_response

from api.tinker.sampling import SampleError, completion_request, read_answer
from api.tinker.schemas import SampleRequest
from serving.proxy import Answer
from training.tinker.wire import encode_sample


def _request(**params: object) -> SampleRequest:
    return SampleRequest.model_validate({
        "sampling_session_id": "sampler-1", "seq_id": 0, "num_samples": 3,
        "prompt": {"chunks": [{"type": "encoded_text", "tokens": [1, 2]},
                              {"type": "encoded_text", "tokens": [3]}]},
        "sampling_params": params, "prompt_logprobs": True})


def test_the_sdk_s_stop_forms_map_to_vllm_s() -> None:
    assert completion_request(_request(stop=[7, 8]))["stop_token_ids"] == [7, 8]
    assert completion_request(_request(stop="\n\n"))["stop"] == ["\n\n"]
    assert completion_request(_request(stop=["a", "b"]))["stop"] == ["a", "b"]
    # [] disables every stop, EOS included; None keeps EOS.
    assert completion_request(_request(stop=[]))["ignore_eos"] is True
    plain = completion_request(_request())
    assert "ignore_eos" not in plain and "stop" not in plain
    assert plain["prompt"] == [1, 2, 3] and plain["n"] == 3 and plain["prompt_logprobs"] == 0
    # Greedy: vLLM takes one; the sequence is repeated.
    assert completion_request(_request(temperature=0))["n"] == 1


def test_vllm_s_answer_reads_as_token_ids_logprobs_and_stop_reasons() -> None:
    answer = Answer(200, {"choices": [
        {"index": 1, "finish_reason": "length",
         "logprobs": {"tokens": ["token_id:9"], "token_logprobs": [-0.5]}},
        {"index": 0, "finish_reason": "stop",
         "logprobs": {"tokens": ["token_id:5", "token_id:2"], "token_logprobs": [-1.0, -0.1]},
         "prompt_logprobs": [None, {"2": {"logprob": -3.0}}, {"3": {"logprob": -4.0}}]}]})
    sequences, prompt = read_answer(answer, [1, 2, 3], True)
    decoded = deserialize_sample_response(encode_sample(sequences, prompt))
    assert [(s.tokens, s.stop_reason) for s in decoded.sequences] == [([5, 2], "stop"),
                                                                        ([9], "length")]
    assert decoded.sequences[0].logprobs == pytest.approx([-1.0, -0.1])
    # The first prompt token has none (NaN on the wire, None to the SDK's user).
    assert decoded.prompt_logprobs == [None, -3.0, -4.0]
    with pytest.raises(SampleError, match="too long"):
        read_answer(Answer(400, {"error": {"message": "prompt too long"}}), [1], False)
