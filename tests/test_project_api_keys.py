"""A project's own API keys through the API (`/v1/organization/projects/{project_id}/api_keys`,
`/v1/me`): made with the secret shown once, listed redacted, revoked at once on every API
node; another project's keys, and the keys jobs mint for their graders, out of reach; and
no more live keys than the setting allows."""

import time
from collections.abc import Iterator

import httpx
import pytest

from storage import api_keys
from tests.support.in_process import InProcessControlPlane, fresh_database

MAX_KEYS = 3


@pytest.fixture(scope="module")
def two_nodes(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[InProcessControlPlane, InProcessControlPlane]]:
    """Two API nodes on one PostgreSQL (each with its own key cache), in this process."""
    a_dir, b_dir = tmp_path_factory.mktemp("keys-a"), tmp_path_factory.mktemp("keys-b")
    with (fresh_database(request, "postgresql", a_dir) as url,
          InProcessControlPlane(a_dir, url, api_keys_max_per_project=MAX_KEYS) as a,
          InProcessControlPlane(b_dir, url, api_key=a.api_key,
                                api_keys_max_per_project=MAX_KEYS) as b):
        yield a, b


def _project_id(node: InProcessControlPlane, key: str) -> str:
    with node.http(key) as http:
        me = http.get("/me").json()
    assert me["object"] == "organization.project", me
    return str(me["id"])


def _new_project_key(node: InProcessControlPlane, name: str) -> str:
    return node.cli("keys", "create", "--project", name).strip()


def _works(node: InProcessControlPlane, key: str) -> bool:
    with node.http(key) as http:
        status = http.get("/files").status_code
    assert status in (200, 401), status
    return status == 200


def _refused_soon(node: InProcessControlPlane, key: str, seconds: float = 1.0) -> bool:
    deadline = time.monotonic() + seconds
    while _works(node, key):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_project_makes_lists_and_revokes_its_own_keys(
        two_nodes: tuple[InProcessControlPlane, InProcessControlPlane]) -> None:
    a, b = two_nodes
    owner = _new_project_key(a, "key-owner")
    project_id = _project_id(a, owner)
    keys = f"/organization/projects/{project_id}/api_keys"
    with a.http(owner) as http:
        made = http.post(keys, json={}).json()
        listed = http.get(keys).json()
    secret = made["value"]
    assert secret.startswith("sk-proj-") and made["object"] == "organization.project.api_key"
    assert made["redacted_value"] == f"{secret[:8]}...{secret[-4:]}"
    assert _project_id(b, secret) == project_id  # a key of the same project, on any node
    assert [k["id"] for k in listed["data"]][0] == made["id"]  # newest first
    assert len(listed["data"]) == 2 and listed["has_more"] is False
    assert all(set(k) == {"id", "object", "redacted_value", "created_at"}
               for k in listed["data"])  # never the secret again
    assert secret not in str(listed)

    assert _works(b, secret) and _works(b, secret)  # node b has it cached
    with a.http(owner) as http:
        gone = http.delete(f"{keys}/{made['id']}").json()
        assert gone == {"id": made["id"], "object": "organization.project.api_key.deleted",
                        "deleted": True}
        # The other node hears of it as it commits (PostgreSQL NOTIFY), a moment later.
        assert _refused_soon(b, secret) and not _works(a, secret)
        assert _works(b, owner)
        assert [k["id"] for k in http.get(keys).json()["data"]] != [made["id"]]
        assert made["id"] not in str(http.get(keys).json())
        again = http.delete(f"{keys}/{made['id']}")
        assert again.status_code == 404 and again.json()["error"]["param"] == "key_id"
    revoked = next(k for k in a.api_keys() if k["id"] == made["id"])
    assert revoked["revoked"] == "yes"  # as the operator's `tuneserve keys list` sees it


def test_another_projects_keys_are_a_404(
        two_nodes: tuple[InProcessControlPlane, InProcessControlPlane]) -> None:
    a, _ = two_nodes
    victim, attacker = _new_project_key(a, "victim"), _new_project_key(a, "attacker")
    victim_project, attacker_project = _project_id(a, victim), _project_id(a, attacker)
    with a.http(victim) as http:
        victim_key_id = http.get(f"/organization/projects/{victim_project}/api_keys"
                                 ).json()["data"][0]["id"]
    theirs = f"/organization/projects/{victim_project}/api_keys"
    ours = f"/organization/projects/{attacker_project}/api_keys"
    with a.http(attacker) as http:
        for answer in (http.get(theirs), http.post(theirs, json={}),
                       http.get(f"{theirs}/{victim_key_id}"),
                       http.delete(f"{theirs}/{victim_key_id}")):
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["param"] == "project_id"
        for answer in (http.get(f"{ours}/{victim_key_id}"),
                       http.delete(f"{ours}/{victim_key_id}")):
            assert answer.status_code == 404, answer.text
            assert answer.json()["error"]["param"] == "key_id"
        cursor = http.get(ours, params={"after": victim_key_id})
        assert cursor.status_code == 400 and cursor.json()["error"]["param"] == "after"
        assert victim_key_id not in http.get(ours).text
    assert _works(a, victim)


def test_keys_minted_for_jobs_are_neither_listed_nor_revoked_here(
        two_nodes: tuple[InProcessControlPlane, InProcessControlPlane]) -> None:
    a, _ = two_nodes
    owner = _new_project_key(a, "grader-jobs")
    project_id = _project_id(a, owner)
    with a.services.db.session() as s:
        job_key = api_keys.add_api_key(s, project_id, job_id="ftjob-grader")
    job_key_id = next(k["id"] for k in a.api_keys() if k["job"] == "ftjob-grader")
    keys = f"/organization/projects/{project_id}/api_keys"
    with a.http(owner) as http:
        assert job_key_id not in http.get(keys).text
        answer = http.delete(f"{keys}/{job_key_id}")
    assert answer.status_code == 404 and answer.json()["error"]["param"] == "key_id"
    assert _works(a, job_key)


def test_a_project_has_no_more_live_keys_than_the_setting_allows(
        two_nodes: tuple[InProcessControlPlane, InProcessControlPlane]) -> None:
    a, _ = two_nodes
    owner = _new_project_key(a, "many-keys")
    keys = f"/organization/projects/{_project_id(a, owner)}/api_keys"
    with a.http(owner) as http:
        made = [http.post(keys).json() for _ in range(MAX_KEYS - 1)]  # with `owner`: the most
        refused = http.post(keys, json={})
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "api_key_limit_reached"
        assert len(http.get(keys).json()["data"]) == MAX_KEYS
        http.delete(f"{keys}/{made[0]['id']}")  # a revoked key no longer counts
        assert http.post(keys, json={}).status_code == 200


def test_bad_input_is_a_400_naming_the_field(
        two_nodes: tuple[InProcessControlPlane, InProcessControlPlane]) -> None:
    a, _ = two_nodes
    keys = f"/organization/projects/{_project_id(a, a.api_key)}/api_keys"
    with a.http() as http:
        cases: list[tuple[httpx.Response, str]] = [
            (http.get(keys, params={"limit": 0}), "limit"),
            (http.get(keys, params={"limit": 101}), "limit"),
        ]
    for answer, param in cases:
        assert answer.status_code == 400, answer.text
        assert answer.json()["error"]["param"] == param, answer.text
