"""The client libraries' tests share the suite's one serving tuneserve (`local_server`)."""

import pytest

from tests.support.chat import wait_for_engine
from tests.support.server import TuneserveServer


@pytest.fixture(scope="session")
def chat_server(local_server: TuneserveServer) -> TuneserveServer:
    """`local_server` once its vLLM engine answers."""
    wait_for_engine(local_server)
    return local_server
