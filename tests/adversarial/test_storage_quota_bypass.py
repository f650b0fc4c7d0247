"""A tenant tries to store more than its quota (TUNESERVE_MAX_PROJECT_STORED_BYTES): by keeping
uploads in progress (which counted for nothing), by sending an upload more parts than it
reserved (parts may hold twice its bytes), or by sending many files at once (each checked
against the same room). What is stored, files and uploads in progress, stays within the
quota, on SQLite and on PostgreSQL."""

import secrets
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.support.in_process import InProcessControlPlane, control_plane_in_process

QUOTA = 1000
MAX_PENDING_UPLOADS = 4


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def quota_server(request: pytest.FixtureRequest,
                 tmp_path_factory: pytest.TempPathFactory) -> Iterator[InProcessControlPlane]:
    with control_plane_in_process(request, request.param,
                                  tmp_path_factory.mktemp(f"quota-{request.param}"),
                                  max_project_stored_bytes=QUOTA,
                                  max_pending_uploads_per_project=MAX_PENDING_UPLOADS) as plane:
        yield plane


@pytest.fixture
def tenant(quota_server: InProcessControlPlane) -> Iterator[httpx.Client]:
    """A project of its own, with nothing stored yet."""
    key = quota_server.cli("keys", "create", "--project", "q-" + secrets.token_hex(4)).strip()
    with quota_server.http(key) as http:
        yield http


def _upload(http: httpx.Client, size: int) -> httpx.Response:
    return http.post("/uploads", json={"bytes": size, "filename": "u.bin",
                                       "mime_type": "application/octet-stream",
                                       "purpose": "user_data"})


def _part(http: httpx.Client, upload_id: str, size: int) -> httpx.Response:
    return http.post(f"/uploads/{upload_id}/parts", files={"data": ("blob", b"x" * size)})


def _refused_for_quota(answer: httpx.Response) -> None:
    assert answer.status_code == 403, answer.text
    assert answer.json()["error"]["code"] == "storage_quota_exceeded", answer.text


def _stored(http: httpx.Client) -> int:
    return sum(f["bytes"] for f in http.get("/files").json()["data"])


def test_uploads_in_progress_count_against_the_quota(tenant: httpx.Client) -> None:
    first = _upload(tenant, 600)
    assert first.status_code == 200, first.text
    _refused_for_quota(_upload(tenant, 600))
    # A file does not fit beside it either.
    _refused_for_quota(tenant.post("/files", data={"purpose": "user_data"},
                                   files={"file": ("f.bin", b"y" * 500)}))
    assert _upload(tenant, 400).status_code == 200
    # Cancelled, its room is free again.
    assert tenant.post(f"/uploads/{first.json()['id']}/cancel").status_code == 200
    assert _upload(tenant, 600).status_code == 200


def test_parts_beyond_the_reservation_count_against_the_quota(tenant: httpx.Client) -> None:
    upload_id = _upload(tenant, 600).json()["id"]
    part = _part(tenant, upload_id, 600)
    assert part.status_code == 200, part.text
    # Parts may hold twice the upload's bytes (parts sent again), but not past the quota.
    _refused_for_quota(_part(tenant, upload_id, 600))
    assert _part(tenant, upload_id, 400).status_code == 200  # 1000: the quota, exactly
    _refused_for_quota(_part(tenant, upload_id, 1))
    _refused_for_quota(_upload(tenant, 1))
    done = tenant.post(f"/uploads/{upload_id}/complete", json={"part_ids": [part.json()["id"]]})
    assert done.status_code == 200, done.text
    # Completed, it holds its file's bytes only.
    assert _stored(tenant) == 600
    assert _upload(tenant, 400).status_code == 200


def test_uploads_in_progress_are_capped(tenant: httpx.Client) -> None:
    uploads = [_upload(tenant, 10) for _ in range(MAX_PENDING_UPLOADS)]
    assert all(u.status_code == 200 for u in uploads)
    refused = _upload(tenant, 10)
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["code"] == "upload_limit_reached"
    assert tenant.post(f"/uploads/{uploads[0].json()['id']}/cancel").status_code == 200
    assert _upload(tenant, 10).status_code == 200


def test_files_sent_at_once_store_at_most_the_quota(tenant: httpx.Client) -> None:
    senders, size = 6, 300  # 1800 bytes together: three fit
    boundary = "quota-" + secrets.token_hex(8)
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n"
            f"user_data\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"f.bin\"\r\nContent-Type: application/octet-stream\r\n\r\n").encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    content = b"z" * size
    # Every request has passed the check on arrival (its length fits the empty project)
    # before any of them sends its file.
    all_arrived = threading.Barrier(senders)

    def body() -> Iterator[bytes]:
        yield head
        all_arrived.wait(timeout=30)
        time.sleep(0.5)
        yield content + tail

    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(tenant.post(
            "/files", content=body(),
            headers={"content-type": f"multipart/form-data; boundary={boundary}",
                     "content-length": str(len(head) + size + len(tail))}))

    threads = [threading.Thread(target=send) for _ in range(senders)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(a.status_code for a in answers) == [200] * 3 + [403] * 3, \
        [a.text for a in answers]
    for refused in (a for a in answers if a.status_code == 403):
        _refused_for_quota(refused)
    assert _stored(tenant) == 3 * size
