"""The suite's SeaweedFS helper: a server that does not start is reported with its own log."""

import pytest

from tests.support.seaweedfs import SeaweedFS


def test_a_server_that_does_not_start_in_time_says_what_its_log_said() -> None:
    # No time at all to answer: the helper gives up at once, stops it and reports its log
    # (not a missing file: the log lived in the directory `stop` removes).
    with pytest.raises(RuntimeError, match="SeaweedFS did not start"):
        SeaweedFS().start(timeout=0)
