"""soap.bodypipe.BodyPipe: a request body from the reactor thread to a worker, in order, bounded."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from soap.bodypipe import BodyLost, BodyPipe


class Flow:
    """Stands for the transport: records pauses and resumes (the reactor: called at once)."""

    def __init__(self) -> None:
        self.events: list[str] = []
        self.paused = threading.Event()

    def pause(self) -> None:
        self.events.append("pause")
        self.paused.set()

    def resume(self) -> None:
        self.events.append("resume")


def _pipe(flow: Flow, **kw) -> BodyPipe:
    return BodyPipe(pause=flow.pause, resume=flow.resume, call_in_reactor=lambda f, *a: f(*a), **kw)


@settings(max_examples=50)
@given(chunks=st.lists(st.binary(min_size=0, max_size=300), max_size=30),
       sizes=st.lists(st.integers(min_value=1, max_value=500), min_size=1, max_size=10))
def test_the_reader_gets_exactly_what_was_written_in_order(chunks, sizes):
    flow = Flow()
    pipe = _pipe(flow, high_water=256, low_water=64)
    got = bytearray()

    def reader() -> None:
        k = 0
        while data := pipe.read(sizes[k % len(sizes)]):
            assert len(data) <= sizes[k % len(sizes)]
            got.extend(data)
            k += 1

    t = threading.Thread(target=reader)
    t.start()
    for c in chunks:
        pipe.write(c)
    pipe.finish()
    t.join(10)
    assert not t.is_alive() and bytes(got) == b"".join(chunks)
    assert flow.events.count("resume") <= flow.events.count("pause")


def test_the_connection_is_paused_above_high_water_and_resumed_below_low_water():
    flow = Flow()
    pipe = _pipe(flow, high_water=1000, low_water=200)
    pipe.write(b"x" * 600)
    assert flow.events == []
    pipe.write(b"x" * 600)  # 1200 waiting
    assert flow.events == ["pause"]
    pipe.write(b"x" * 100)  # still paused: no second pause
    assert pipe.read(600) == b"x" * 600 and flow.events == ["pause"]  # 700 waiting
    assert len(pipe.read(600)) == 600 and flow.events == ["pause", "resume"]  # 100 waiting


def test_a_lost_connection_fails_the_next_read_but_not_a_complete_body():
    pipe = _pipe(Flow())
    pipe.write(b"abc")
    pipe.fail("gone")
    assert pipe.read(10) == b"abc"  # what arrived is still read
    with pytest.raises(BodyLost):
        pipe.read(10)
    whole = _pipe(Flow())
    whole.write(b"abc")
    whole.finish()
    whole.fail("closed after the body")
    assert whole.read() == b"abc" and whole.read() == b""


def test_a_reader_that_stops_discards_the_rest_and_resumes_the_connection():
    flow = Flow()
    pipe = _pipe(flow, high_water=10, low_water=5)
    pipe.write(b"y" * 50)
    assert flow.events == ["pause"]
    pipe.discard()
    assert flow.events == ["pause", "resume"]
    pipe.write(b"z" * 50)  # dropped as it arrives
    pipe.finish()
    assert pipe.read() == b"" and pipe.received == 100 and pipe.tell() == 100
