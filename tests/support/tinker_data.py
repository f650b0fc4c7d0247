"""What the Tinker API's tests send through the official `tinker` SDK."""

import tinker

from tests.support.server import TuneserveServer


def datum(tokens: list[int]) -> tinker.Datum:
    """The next-token shape the SDK's users build: input tokens[:-1], targets tokens[1:]."""
    return tinker.Datum(
        model_input=tinker.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tinker.TensorData(data=tokens[1:], dtype="int64"),
                        "weights": tinker.TensorData(data=[1.0] * (len(tokens) - 1),
                                                     dtype="float32")})


def tinker_root(server: TuneserveServer) -> str:
    """The SDK's `base_url`: the server's root (the SDK adds `/api/v1`)."""
    return server.base_url.removesuffix("/v1")


def tinker_key(server: TuneserveServer, project: str) -> str:
    return server.cli("keys", "create", "--project", project, "--tinker").strip()
