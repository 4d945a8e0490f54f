"""The name server's framing on bytes alone: a request is cut out whole, and a cap, garbage and a deadline
end the wait, without a socket or a clock."""

from __future__ import annotations

import sys

import pytest
from procs import ROOT
from rpyc.core import brine

if str(ROOT) not in sys.path:  # plain `pytest tests/` puts only tests/ on the path
    sys.path.insert(0, str(ROOT))

from net.framing import RequestFrame
from net.registry_protocol import BadRequest, decode_request

QUERY = brine.dump(("RPYC", "QUERY", ("TICKETS",)))


def frame(max_bytes: int = 4096, opened: float = 100.0, deadline: float = 2.0) -> RequestFrame:
    return RequestFrame(decode_request, max_bytes, opened, deadline)


def test_a_request_arriving_a_byte_at_a_time_is_answered_only_when_whole() -> None:
    reading = frame()
    answers = [reading.feed(QUERY[i:i + 1]) for i in range(len(QUERY))]
    assert answers[:-1] == [None] * (len(QUERY) - 1)
    assert answers[-1] == ("QUERY", ("TICKETS",), None)


def test_more_bytes_than_the_cap_is_refused_and_the_read_never_asks_past_it() -> None:
    reading = frame(max_bytes=len(QUERY) - 1)
    assert reading.room() == len(QUERY)
    with pytest.raises(BadRequest, match=f"larger than {len(QUERY) - 1} bytes"):
        reading.feed(QUERY)


def test_garbage_is_refused_from_its_first_byte() -> None:
    with pytest.raises(BadRequest, match="not an RPyC registry request"):
        frame().feed(b"G")


def test_the_deadline_counts_from_the_opening_whatever_arrives() -> None:
    reading = frame(opened=100.0, deadline=2.0)
    reading.feed(QUERY[:3])
    assert reading.due == 102.0
    assert not reading.expired(101.9)
    assert reading.expired(102.0)
