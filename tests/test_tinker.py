"""The Tinker API (`/api/v1`) through the official `tinker` SDK 0.38, as its users call it:
keys, sessions and the server's capabilities so far (issue 27 builds the rest on these)."""

import httpx
import pytest
import tinker

from tests.support.server import TuneserveServer
from tests.support.training import BASE

pytestmark = pytest.mark.server


@pytest.fixture(autouse=True)
def _no_telemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TINKER_TELEMETRY", "0")


def _root(server: TuneserveServer) -> str:
    return server.base_url.removesuffix("/v1")


def _key(server: TuneserveServer, project: str) -> str:
    return server.cli("keys", "create", "--project", project, "--tinker").strip()


def _heartbeat(server: TuneserveServer, key: str, session_id: str) -> httpx.Response:
    return httpx.post(_root(server) + "/api/v1/session_heartbeat", timeout=10,
                      headers={"X-API-Key": key}, json={"session_id": session_id})


def test_a_tinker_key_connects_the_sdk_which_sees_the_served_bases(
    local_server: TuneserveServer
) -> None:
    rest = tinker.RestClient(base_url=_root(local_server), api_key=_key(local_server, "tinker-a"))
    models = {m.model_name: (m.trainable, m.sampleable)
              for m in rest.get_server_capabilities().result().supported_models}
    # The bases /v1/models lists: the served one trains and samples (this server may also
    # train bases it does not serve).
    bases = {m.id for m in local_server.client().models.list() if not m.id.startswith("ft:")}
    assert set(models) == bases and models[BASE] == (True, True)


def test_a_session_is_its_project_s_and_ends_when_the_client_closes(
    local_server: TuneserveServer
) -> None:
    key = _key(local_server, "tinker-b")
    assert key.startswith("tml-")
    client = tinker.ServiceClient(base_url=_root(local_server), api_key=key)
    session_id = client.holder.get_session_id()
    assert _heartbeat(local_server, key, session_id).status_code == 200
    # Another project's key does not find it.
    other = _key(local_server, "tinker-c")
    refused = _heartbeat(local_server, other, session_id)
    assert refused.status_code == 404 and refused.json()["error"]["param"] == "session_id"
    client.close("success", detail="done").result()
    # Finished: its heartbeats are answered 410, which stops the SDK's loop.
    assert _heartbeat(local_server, key, session_id).status_code == 410


def test_no_key_or_a_wrong_one_is_refused(local_server: TuneserveServer) -> None:
    root = _root(local_server)
    missing = httpx.get(root + "/api/v1/get_server_capabilities", timeout=10)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["error"]["message"]
    with pytest.raises(tinker.AuthenticationError):
        tinker.RestClient(base_url=root, api_key="tml-not-a-key").get_server_capabilities(
        ).result()
