"""The Tinker SDK's protobuf messages (`tinker.proto.tinker_public_pb2`, Apache-2.0, shipped in
the SDK) decoded into what the trainer computes on, and its answers encoded as the SDK reads
them. Anything this server does not compute on (images, audio, 2-D sparse targets) is a
`BadRequest` naming it, which the tenant sees as the request's error."""

from dataclasses import dataclass

import numpy as np
from tinker.proto import tinker_public_pb2 as pb

# A forward_backward body, decompressed: the SDK splits a batch into chunks of at most
# `fwdbwd_max_chunk_bytes_count` (5 MB, ClientConfig) by its own estimate; this leaves room.
MAX_FORWARD_BACKWARD_BYTES = 8 * 1024 * 1024
# What one forward_backward may carry, whatever its byte size: the datums and the tokens
# of one datum (bounded again by the base's context length in the trainer).
MAX_DATUMS = 4096
MAX_DATUM_TOKENS = 131072

_DTYPES: dict[int, np.dtype] = {
    pb.DTYPE_FLOAT32: np.dtype(np.float32),
    pb.DTYPE_INT64: np.dtype(np.int64),
    pb.DTYPE_INT32: np.dtype(np.int32),
}


class BadRequest(ValueError):
    """A request this server cannot do as sent; its text is the tenant's error."""


@dataclass(frozen=True)
class Datum:
    tokens: np.ndarray  # int64 [T]: the model input
    inputs: dict[str, np.ndarray]  # loss_fn_inputs, each [T]


@dataclass(frozen=True)
class ForwardBackward:
    model_id: str
    seq_id: int
    loss_fn: str
    config: dict[str, float]
    forward_only: bool
    data: list[Datum]


def header(body: bytes) -> tuple[str, int]:
    """The run and sequence number a forward_backward body names (the API routes on them)."""
    msg = _parse(body)
    return msg.model_id, msg.seq_id


def _parse(body: bytes) -> pb.ForwardBackwardRequest:
    msg = pb.ForwardBackwardRequest()
    try:
        msg.ParseFromString(body)
    except Exception as exc:  # protobuf's DecodeError, whichever runtime backs it
        raise BadRequest("The body is not a ForwardBackwardRequest protobuf.") from exc
    return msg


def _tensor(name: str, msg: pb.Tensor) -> np.ndarray:
    dtype = _DTYPES.get(msg.dtype)
    if dtype is None:
        raise BadRequest(f"loss_fn_inputs['{name}'] has a dtype this server does not read.")
    if msg.WhichOneof("encoding") != "dense" or len(msg.shape) > 1:
        raise BadRequest(f"loss_fn_inputs['{name}']: only 1-D dense tensors are supported.")
    if len(msg.dense) % dtype.itemsize:
        raise BadRequest(f"loss_fn_inputs['{name}'] is truncated.")
    return np.frombuffer(msg.dense, dtype=dtype)


def decode_forward_backward(body: bytes) -> ForwardBackward:
    msg = _parse(body)
    if len(msg.data) > MAX_DATUMS:
        raise BadRequest(f"A forward_backward carries at most {MAX_DATUMS} datums.")
    data = []
    for i, datum in enumerate(msg.data):
        parts = []
        for chunk in datum.model_input:
            if chunk.WhichOneof("chunk") != "encoded_text":
                raise BadRequest(f"data[{i}].model_input: only encoded_text chunks are "
                                 "supported (this server trains text models).")
            raw = chunk.encoded_text.tokens
            if len(raw) % 4:
                raise BadRequest(f"data[{i}].model_input is truncated.")
            parts.append(np.frombuffer(raw, dtype=np.int32))
        tokens = (np.concatenate(parts) if parts else np.zeros(0, np.int32)).astype(np.int64)
        if not 0 < len(tokens) <= MAX_DATUM_TOKENS:
            raise BadRequest(f"data[{i}].model_input must hold 1 to {MAX_DATUM_TOKENS} tokens.")
        inputs = {name: _tensor(name, t) for name, t in datum.loss_fn_inputs.items()}
        for name, value in inputs.items():
            if len(value) != len(tokens):
                raise BadRequest(f"data[{i}].loss_fn_inputs['{name}'] has {len(value)} "
                                 f"values for {len(tokens)} input tokens.")
        data.append(Datum(tokens=tokens, inputs=inputs))
    config = {k: float(v) for k, v in msg.loss_fn_config.items()}
    for key, value in msg.loss_fn_config_v2.items():
        if value.WhichOneof("value") == "number":
            config[key] = value.number
        else:
            raise BadRequest(f"loss_fn_config['{key}'] must be a number.")
    return ForwardBackward(model_id=msg.model_id, seq_id=msg.seq_id, loss_fn=msg.loss_fn,
                           config=config, forward_only=msg.forward_only, data=data)


def encode_output(outputs: list[dict[str, np.ndarray]], metrics: dict[str, float]) -> bytes:
    """A ForwardBackwardOutput: one ArrayRecord with each field's per-datum float32 arrays
    laid end to end, and the byte offset where each datum's starts."""
    msg = pb.ForwardBackwardOutput(loss_fn_output_type="ArrayRecord")
    record = msg.loss_fn_outputs.add()
    record.num_datums = len(outputs)
    for name in (outputs[0] if outputs else {}):
        arrays = [np.ascontiguousarray(o[name], dtype=np.float32) for o in outputs]
        offsets = np.cumsum([0] + [a.nbytes for a in arrays], dtype=np.int64)
        field = record.fields[name]
        field.data = b"".join(a.tobytes() for a in arrays)
        field.offsets = offsets.tobytes()
        field.dtype = pb.DTYPE_FLOAT32
    for key, value in metrics.items():
        msg.metrics[key] = value
    encoded: bytes = msg.SerializeToString()
    return encoded


@dataclass(frozen=True)
class SampledSequence:
    tokens: list[int]
    logprobs: list[float]
    stopped: bool  # False: it ran to max_tokens


def encode_sample(sequences: list[SampledSequence],
                  prompt_logprobs: list[float] | None) -> bytes:
    """A SampleResponse: each sequence's tokens (int32) and logprobs (float32), and where
    asked the prompt's logprobs (NaN for the first token, which nothing predicts)."""
    msg = pb.SampleResponse()
    for seq in sequences:
        out = msg.sequences.add()
        out.stop_reason = pb.STOP_REASON_STOP if seq.stopped else pb.STOP_REASON_LENGTH
        out.tokens = np.asarray(seq.tokens, dtype=np.int32).tobytes()
        out.logprobs = np.asarray(seq.logprobs, dtype=np.float32).tobytes()
    if prompt_logprobs is not None:
        msg.prompt_logprobs = np.asarray(prompt_logprobs, dtype=np.float32).tobytes()
    encoded: bytes = msg.SerializeToString()
    return encoded
