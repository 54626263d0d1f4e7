"""MLLP framer (pix/mllp.py): ITI TF-2x Appendix C framing, size cap, garbage handling."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pix.mllp import (
    BytesDiscarded,
    FrameIncomplete,
    FrameInterrupted,
    MessageTooLarge,
    MllpDecoder,
    frame,
)

# HL7 content never contains the framing bytes 0x0B / 0x1C (they are control characters).
content = st.binary(min_size=0, max_size=300).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
garbage = st.binary(max_size=40).map(lambda b: b.replace(b"\x0b", b""))


def feed_split(decoder: MllpDecoder, stream: bytes, cuts: list[int]) -> list:
    events = []
    points = sorted({c % (len(stream) + 1) for c in cuts})
    start = 0
    for p in points + [len(stream)]:
        events += decoder.feed(stream[start:p])
        start = p
    return events


def messages(events) -> list[bytes]:
    return [e for e in events if isinstance(e, bytes)]


def normalise(events) -> tuple[list, int]:
    """Events other than discards (in order) and the total of discarded bytes."""
    return [e for e in events if not isinstance(e, BytesDiscarded)], sum(
        e.count for e in events if isinstance(e, BytesDiscarded)
    )


def test_one_frame():
    assert MllpDecoder().feed(frame(b"MSH|^~\\&|A\rPID|1\r")) == [b"MSH|^~\\&|A\rPID|1\r"]


def test_frame_is_sb_message_eb_cr():
    assert frame(b"X") == b"\x0bX\x1c\x0d"


def test_bytes_outside_a_frame_are_reported_and_dropped():
    d = MllpDecoder()
    assert d.feed(b"hello" + frame(b"M1") + b"\r\n") == [BytesDiscarded(5), b"M1", BytesDiscarded(2)]


def test_oversize_message_reported_once_and_skipped_until_frame_end():
    d = MllpDecoder(max_message_bytes=10)
    events = d.feed(b"\x0bMSH|0123456789")
    assert events == [MessageTooLarge(b"MSH|0123456", 10)]  # the first cap + 1 bytes
    assert d.buffered == 0
    assert d.feed(b"x" * 10_000) == []
    assert d.buffered == 0
    assert d.feed(b"yy\x1c") == []
    assert d.feed(b"\x0d" + frame(b"small")) == [b"small"]


def test_message_of_exactly_the_cap_is_accepted():
    d = MllpDecoder(max_message_bytes=5)
    assert d.feed(frame(b"12345") + frame(b"123456")) == [b"12345", MessageTooLarge(b"123456", 5)]


def test_lone_end_block_is_content():
    d = MllpDecoder()
    assert d.feed(b"\x0bA\x1cB\x1c\x0d") == [b"A\x1cB"]
    d = MllpDecoder()
    assert d.feed(b"\x0bA\x1c") == [] and d.feed(b"B\x1c\x0d") == [b"A\x1cB"]


def test_start_block_inside_a_frame_restarts():
    d = MllpDecoder()
    assert d.feed(b"\x0bhalf\x0bfull\x1c\x0d") == [FrameInterrupted(b"half"), b"full"]


def test_close_inside_a_frame_reports_the_unfinished_message():
    d = MllpDecoder()
    assert d.feed(b"\x0bMSH|^~\\&|half") == []
    assert d.close() == [FrameIncomplete(b"MSH|^~\\&|half")]
    assert d.close() == []


@given(st.lists(content, max_size=8), st.lists(st.integers(min_value=0), max_size=30))
def test_any_split_of_a_stream_of_frames_yields_the_same_messages(msgs, cuts):
    stream = b"".join(frame(m) for m in msgs)
    assert feed_split(MllpDecoder(1000), stream, cuts) == msgs


@given(st.lists(st.tuples(garbage, content), max_size=8), garbage, st.lists(st.integers(min_value=0), max_size=30))
def test_garbage_between_frames_is_discarded_and_counted(pairs, tail, cuts):
    stream = b"".join(g + frame(m) for g, m in pairs) + tail
    events = feed_split(MllpDecoder(1000), stream, cuts)
    assert messages(events) == [m for _, m in pairs]
    assert sum(e.count for e in events if isinstance(e, BytesDiscarded)) == sum(len(g) for g, _ in pairs) + len(tail)


@settings(max_examples=300)
@given(
    st.lists(st.one_of(st.binary(max_size=50), st.sampled_from([b"\x0b", b"\x1c", b"\x0d", b"\x1c\x0d"])), max_size=30),
    st.lists(st.integers(min_value=0), max_size=30),
    st.integers(min_value=1, max_value=40),
)
def test_garbage_never_raises_and_is_split_invariant(parts, cuts, cap):
    stream = b"".join(parts)
    whole = MllpDecoder(cap)
    reference = whole.feed(stream) + whole.close()
    split = MllpDecoder(cap)
    events = feed_split(split, stream, cuts) + split.close()
    assert normalise(events) == normalise(reference)
    for e in events:
        if isinstance(e, bytes):
            assert len(e) <= cap
    assert split.buffered == 0


@settings(max_examples=100)
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=40), st.integers(min_value=1, max_value=30))
def test_buffer_never_exceeds_the_cap(chunks, cap):
    d = MllpDecoder(cap)
    for c in chunks:
        d.feed(c)
        assert d.buffered <= cap
