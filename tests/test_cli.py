"""Keys as an operator makes them: bootstrap on first start, `tuneserve keys create`."""

import os
import stat
from pathlib import Path

import openai
import pytest

from tests.support.server import TuneserveServer

pytestmark = pytest.mark.server


def test_first_start_without_a_key_writes_one(tmp_path: Path) -> None:
    server = TuneserveServer(tmp_path / "data")
    del server.env["TUNESERVE_BOOTSTRAP_API_KEY"]
    server.start()
    try:
        key_file = tmp_path / "data" / "api_key"
        assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
        key = key_file.read_text().strip()
        assert key.startswith("sk-")
        assert str(key_file) in server.log_path.read_text()  # said where on the console
        assert server.client(key).files.list().data == []
        # A new project's key works and is separate.
        other = server.cli("keys", "create", "--project", "team-b").strip()
        assert other.startswith("sk-") and other != key
        server.client(other).files.create(file=("b.txt", b"b"), purpose="user_data")
        assert server.client(key).files.list().data == []
    finally:
        server.stop()


def test_bootstrap_key_creates_the_default_project_once(tmp_path: Path) -> None:
    server = TuneserveServer(tmp_path / "data").start()
    try:
        server.client().files.create(file=("a.txt", b"a"), purpose="user_data")
        assert not (tmp_path / "data" / "api_key").exists()
    finally:
        server.stop()
    # A restart with another bootstrap key does not add it: the key store is not empty.
    server.env["TUNESERVE_BOOTSTRAP_API_KEY"] = "sk-another-bootstrap-key-0123456789"
    server.start()
    try:
        try:
            server.client("sk-another-bootstrap-key-0123456789").files.list()
            raise AssertionError("a second bootstrap key must not be accepted")
        except openai.AuthenticationError:
            pass
    finally:
        server.stop()
