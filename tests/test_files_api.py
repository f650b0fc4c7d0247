"""`/v1/files` through the official openai client, on both storage configurations."""

import os
import socket
import stat

import httpx
import openai
import pytest

from tests.conftest import SMALL_FILE_LIMIT
from tests.support.openai_spec import assert_matches
from tests.support.server import TuneserveServer

JSONL = b'{"messages": [{"role": "user", "content": "hi"}]}\n' * 3


def test_create_retrieve_download_delete(client: openai.OpenAI, server: TuneserveServer) -> None:
    data = os.urandom(1_500_000) + b"\x00\xff\r\n"
    created = client.files.create(file=("blob.bin", data), purpose="user_data")
    assert created.id.startswith("file-")
    assert (created.bytes, created.filename, created.purpose) == (len(data), "blob.bin",
                                                                  "user_data")
    with server.http() as http:
        body = http.get(f"/files/{created.id}").json()
        assert_matches("OpenAIFile", body)
    assert client.files.retrieve(created.id).id == created.id
    assert client.files.content(created.id).read() == data

    deleted = client.files.delete(created.id)
    assert deleted.deleted and deleted.id == created.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.content(created.id)
    with pytest.raises(openai.NotFoundError):
        client.files.delete(created.id)


def test_deleting_a_file_removes_its_bytes(server: TuneserveServer, client: openai.OpenAI) -> None:
    from api.settings import Settings
    from storage.blob import open_blob_store

    created = client.files.create(file=("gone.txt", b"bytes to forget"), purpose="assistants")
    settings = Settings(_env_file=None, **{  # the server's own storage settings
        k.removeprefix("TUNESERVE_").lower(): v for k, v in server.env.items()
        if k.startswith("TUNESERVE_") and k != "TUNESERVE_BOOTSTRAP_API_KEY"
    })
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        if k in server.env:
            os.environ[k] = server.env[k]
    store = open_blob_store(settings)
    keys = [k for k in store.list_keys("files/") if k.endswith(created.id)]
    assert len(keys) == 1
    client.files.delete(created.id)
    assert not store.exists(keys[0])


def test_fine_tune_jsonl_is_accepted_and_round_trips(client: openai.OpenAI) -> None:
    created = client.files.create(file=("train.jsonl", JSONL), purpose="fine-tune")
    assert created.status == "processed"
    assert client.files.content(created.id).read() == JSONL


def test_list_paginates_in_order_and_filters_by_purpose(
    client: openai.OpenAI, server: TuneserveServer
) -> None:
    ids = [client.files.create(file=(f"p{i}.txt", b"x" * (i + 1)), purpose="batch").id
           for i in range(5)]
    first = client.files.list(purpose="batch", limit=2)
    assert [f.id for f in first.data] == ids[::-1][:2]
    assert first.has_more
    walked = [f.id for f in client.files.list(purpose="batch", limit=2)]  # auto-paginates
    assert walked[:5] == ids[::-1]
    ascending = [f.id for f in client.files.list(purpose="batch", order="asc")]
    assert ascending[-5:] == ids
    with server.http() as http:
        body = http.get("/files", params={"limit": 2, "purpose": "batch"}).json()
        assert_matches("ListFilesResponse", body)
        assert body["last_id"] == ids[-2]


def test_a_list_goes_on_past_objects_deleted_while_it_is_paged(client: openai.OpenAI) -> None:
    ids = [client.files.create(file=(f"d{i}.txt", b"x"), purpose="evals").id for i in range(4)]
    # Deleting what it lists, one page at a time: each next page is asked `after` the id of
    # a file deleted meanwhile.
    seen = []
    for listed in client.files.list(purpose="evals", limit=1):
        seen.append(listed.id)
        client.files.delete(listed.id)
    assert seen[:4] == ids[::-1]
    assert [f.id for f in client.files.list(purpose="evals")] == []


def test_another_project_sees_nothing(
    client: openai.OpenAI, server: TuneserveServer, other_key: str
) -> None:
    mine = client.files.create(file=("secret.txt", b"top secret"), purpose="user_data")
    theirs = server.client(other_key)
    assert all(f.id != mine.id for f in theirs.files.list())
    for call in (theirs.files.retrieve, theirs.files.content, theirs.files.delete):
        with pytest.raises(openai.NotFoundError):
            call(mine.id)
    assert client.files.retrieve(mine.id).id == mine.id  # still there for its owner
    with server.http(other_key) as http:
        # Another project's id is not a cursor either.
        assert http.get("/files", params={"after": mine.id}).status_code == 400


def test_expiring_file_reports_expires_at(client: openai.OpenAI) -> None:
    created = client.files.create(
        file=("e.txt", b"short-lived"), purpose="user_data",
        expires_after={"anchor": "created_at", "seconds": 3600},
    )
    assert created.expires_at == created.created_at + 3600


def _error(exc: openai.APIStatusError) -> dict:  # type: ignore[type-arg]
    body = exc.response.json()
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]


@pytest.mark.parametrize(
    ("kwargs", "param", "fragment"),
    [
        ({"file": ("t.jsonl", b'{"ok": 1}\n{"ok": 2}\nnot json\n'), "purpose": "fine-tune"},
         "file", "Line 3"),
        ({"file": ("t.jsonl", b'{"ok": 1}\n\xff\xfe\n'), "purpose": "fine-tune"},
         "file", "Line 2: not valid UTF-8"),
        # The upload check reads lines as validation does: no NaN, objects only.
        ({"file": ("t.jsonl", b'{"ok": NaN}\n'), "purpose": "fine-tune"}, "file", "NaN"),
        ({"file": ("t.jsonl", b'{"ok": 1}\n[1, 2]\n'), "purpose": "fine-tune"},
         "file", "Line 2: expected a JSON object"),
        ({"file": ("t.jsonl", b""), "purpose": "fine-tune"}, "file", "empty"),
        # A 500 here would be retried by the client: the whole file sent three times.
        ({"file": ("t.jsonl", b'{"ok": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"),
          "purpose": "fine-tune"}, "file", "Line 1: the JSON nests too deeply"),
        ({"file": ("t.txt", b"data"), "purpose": "homework"}, "purpose", "homework"),
        ({"file": ("t.txt", b"data"), "purpose": "user_data",
          "expires_after": {"anchor": "created_at", "seconds": 60}},
         "expires_after.seconds", "3600"),
        ({"file": ("t.txt", b"data"), "purpose": "user_data",
          "expires_after": {"anchor": "last_active_at", "seconds": 3600}},
         "expires_after.anchor", "created_at"),
    ],
)
def test_bad_uploads_get_a_400_naming_the_field(
    client: openai.OpenAI, kwargs: dict, param: str, fragment: str  # type: ignore[type-arg]
) -> None:
    before = {f.id for f in client.files.list()}
    with pytest.raises(openai.BadRequestError) as info:
        client.files.create(**kwargs)
    err = _error(info.value)
    assert err["param"] == param
    assert fragment in err["message"]
    assert {f.id for f in client.files.list()} == before  # nothing was stored


def test_missing_form_fields(server: TuneserveServer) -> None:
    with server.http() as http:
        no_purpose = http.post("/files", files={"file": ("a.txt", b"abc")})
        assert no_purpose.status_code == 400
        assert no_purpose.json()["error"]["param"] == "purpose"
        no_file = http.post("/files", data={"purpose": "user_data"}, files={"x": ("", b"")})
        assert no_file.status_code == 400
        assert no_file.json()["error"]["param"] in ("file", "x")
        only_fields = http.post("/files", data={"purpose": "user_data"},
                                headers={"content-type": "multipart/form-data; boundary=zz"},
                                content=b'--zz\r\nContent-Disposition: form-data; '
                                        b'name="purpose"\r\n\r\nuser_data\r\n--zz--\r\n')
        assert only_fields.status_code == 400
        assert only_fields.json()["error"]["param"] == "file"
        not_multipart = http.post("/files", json={"purpose": "user_data"})
        assert not_multipart.status_code == 400
        assert "multipart/form-data" in not_multipart.json()["error"]["message"]


def test_file_over_the_size_limit_is_413(client: openai.OpenAI) -> None:
    before = {f.id for f in client.files.list()}
    for size in (SMALL_FILE_LIMIT + 1, SMALL_FILE_LIMIT * 3):
        with pytest.raises(openai.APIStatusError) as info:
            client.files.create(file=("big.bin", b"\0" * size), purpose="user_data")
        assert info.value.status_code == 413
        assert _error(info.value)["param"] == "file"
        assert str(SMALL_FILE_LIMIT) in _error(info.value)["message"]
    assert {f.id for f in client.files.list()} == before
    # Exactly at the limit is fine.
    ok = client.files.create(file=("edge.bin", b"\1" * SMALL_FILE_LIMIT), purpose="user_data")
    assert ok.bytes == SMALL_FILE_LIMIT


def test_client_that_disconnects_mid_upload_leaves_no_file(
    client: openai.OpenAI, server: TuneserveServer
) -> None:
    before = {f.id for f in client.files.list()}
    head = (b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nuser_data\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"cut.bin\"\r\n\r\n")
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(
            b"POST /v1/files HTTP/1.1\r\nHost: x\r\n"
            b"Authorization: Bearer " + server.api_key.encode() + b"\r\n"
            b"Content-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 3000000\r\n\r\n" + head + b"\0" * 1_000_000
        )
    # The server notices the cut, aborts the write and records nothing.
    with httpx.Client() as http:
        for _ in range(50):
            http.get(f"http://127.0.0.1:{server.port}/health")
    assert {f.id for f in client.files.list()} == before


def test_authentication(server: TuneserveServer) -> None:
    with pytest.raises(openai.AuthenticationError) as info:
        server.client("sk-not-a-key").files.list()
    assert _error(info.value)["code"] == "invalid_api_key"
    with httpx.Client() as http:
        missing = http.get(server.base_url + "/files")
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "missing_api_key"
        assert http.get(server.base_url.removesuffix("/v1") + "/health").status_code == 200


def test_errors_use_the_openai_envelope(server: TuneserveServer) -> None:
    with server.http() as http:
        unknown = http.get("/no-such-thing")
        assert unknown.status_code == 404
        assert_matches("ErrorResponse", unknown.json())
        bad_limit = http.get("/files", params={"limit": 0})
        assert bad_limit.status_code == 400
        assert bad_limit.json()["error"]["param"] == "limit"
        bad_order = http.get("/files", params={"order": "sideways"})
        assert bad_order.json()["error"]["param"] == "order"
        bad_cursor = http.get("/files", params={"after": "file-nope"})
        assert bad_cursor.status_code == 400
        assert bad_cursor.json()["error"]["param"] == "after"
        assert http.delete("/files").status_code == 405


def test_a_byte_order_mark_is_accepted_at_upload_as_validation_accepts_it(
    client: openai.OpenAI,
) -> None:
    created = client.files.create(file=("bom.jsonl", b'\xef\xbb\xbf{"ok": 1}\n\n{"ok": 2}\n'),
                                  purpose="fine-tune")
    assert created.bytes == 24


def test_the_data_dir_and_what_is_stored_in_it_are_private(local_server: TuneserveServer) -> None:
    created = local_server.client().files.create(file=("p.jsonl", b'{"a": 1}\n'),
                                                 purpose="fine-tune")
    data = local_server.data_dir
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    # What the server wrote: the new file's blob and the folders on its way, the database.
    (blob,) = (p for p in (data / "blobs").rglob("*") if created.id in p.name)
    stored = [blob, *[d for d in blob.parents if data / "blobs" in (d, *d.parents)],
              data / "tuneserve.db"]
    for path in stored:
        assert stat.S_IMODE(path.stat().st_mode) == (0o700 if path.is_dir() else 0o600), path
