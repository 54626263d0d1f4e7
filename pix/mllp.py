"""Sans-I/O MLLP framing (Minimal Lower Layer Protocol, ITI TF-2x Appendix C; HL7 v2.5 Implementation
Guide for the MLLP, Release 2): a message travels as

    <SB> message <EB><CR>      SB = 0x0B (vertical tab), EB = 0x1C (file separator), CR = 0x0D

`MllpDecoder.feed(data)` takes bytes as they arrive (any split) and returns a list of events:
a complete message as `bytes`, or a `FramingProblem` (bytes outside a frame discarded, a message
over the size cap, a frame interrupted by a new start block, a frame left incomplete at close).
A message over `max_message_bytes` is reported once and its remaining bytes are skipped until the
next frame end; it is never buffered beyond the cap. No I/O, no Twisted.
"""

from __future__ import annotations

from typing import Union

import attrs

START_BLOCK = 0x0B
END_BLOCK = 0x1C
CARRIAGE_RETURN = 0x0D
_SB = b"\x0b"
_TRAILER = b"\x1c\x0d"

HEAD_BYTES = 1024  # how much of a rejected message a problem keeps (enough for MSH-10)


@attrs.frozen
class FramingProblem:
    """Something in the byte stream that is not a well-framed message."""


@attrs.frozen
class BytesDiscarded(FramingProblem):
    """`count` bytes arrived outside a frame (before a start block) and were dropped."""

    count: int


@attrs.frozen
class MessageTooLarge(FramingProblem):
    """A message grew beyond `limit` bytes: reported once, its bytes skipped until <EB><CR>.
    `head` is its first bytes (MSH-10 can often be read from them, to NAK it)."""

    head: bytes
    limit: int


@attrs.frozen
class FrameInterrupted(FramingProblem):
    """A start block arrived inside a frame: the unfinished message (`head`: its first bytes) is
    dropped and a new frame starts."""

    head: bytes


@attrs.frozen
class FrameIncomplete(FramingProblem):
    """The stream ended (`MllpDecoder.close`) inside a frame; `head` is the unfinished message's start."""

    head: bytes


Event = Union[bytes, FramingProblem]

_OUTSIDE, _INSIDE, _SKIPPING = 0, 1, 2


def frame(message: bytes) -> bytes:
    """One MLLP frame around an encoded HL7 message."""
    return _SB + message + _TRAILER


class MllpDecoder:
    """Incremental MLLP deframer with a per-message size cap (sans-I/O)."""

    def __init__(self, max_message_bytes: int = 1 << 20) -> None:
        if max_message_bytes < 1:
            raise ValueError("max_message_bytes must be positive")
        self.max_message_bytes = max_message_bytes
        self._state = _OUTSIDE
        self._buf = bytearray()
        self._pending_eb = False  # the previous chunk ended with <EB> inside a frame

    @property
    def buffered(self) -> int:
        """Bytes currently held (never more than max_message_bytes + 1)."""
        return len(self._buf)

    @property
    def in_frame(self) -> bool:
        return self._state != _OUTSIDE

    def feed(self, data: bytes) -> list[Event]:
        events: list[Event] = []
        discarded = 0
        pos, n = 0, len(data)
        while pos < n:
            if self._state == _OUTSIDE:
                i = data.find(_SB, pos)
                if i < 0:
                    discarded += n - pos
                    break
                discarded += i - pos
                if discarded:
                    events.append(BytesDiscarded(discarded))
                    discarded = 0
                self._state = _INSIDE
                self._buf = bytearray()
                pos = i + 1
                continue

            if self._pending_eb:
                # <EB> was the last byte of the previous chunk: a frame end only if <CR> follows.
                self._pending_eb = False
                if data[pos] == CARRIAGE_RETURN:
                    pos += 1
                    self._end_frame(events)
                    continue
                if self._state == _INSIDE:
                    self._take(events, b"\x1c")  # a lone <EB> is content
                    if self._state != _INSIDE:
                        continue

            end = data.find(_TRAILER, pos)
            limit = end if end >= 0 else n
            if self._state == _INSIDE:
                sb = data.find(_SB, pos, limit)
                if sb >= 0:
                    # A start block inside a frame: the sender gave up on that message.
                    self._take(events, data[pos:sb])
                    pos = sb
                    if self._state == _INSIDE:
                        events.append(FrameInterrupted(bytes(self._buf[:HEAD_BYTES])))
                        self._buf = bytearray()
                        pos = sb + 1
                    continue  # (when the cap was exceeded first, the start block is skipped content)
            stop = limit
            if end < 0 and data[n - 1] == END_BLOCK:
                stop = n - 1
                self._pending_eb = True
            if self._state == _INSIDE:
                self._take(events, data[pos:stop])
            if end >= 0:
                pos = end + 2
                self._end_frame(events)
            else:
                pos = n
        if discarded:
            events.append(BytesDiscarded(discarded))
        return events

    def close(self) -> list[Event]:
        """The stream ended: report an unfinished frame (if any) and reset."""
        events: list[Event] = []
        if self._state == _INSIDE:
            head = bytes(self._buf[:HEAD_BYTES])
            if self._pending_eb:
                head = (head + b"\x1c")[:HEAD_BYTES]
            events.append(FrameIncomplete(head))
        self._state = _OUTSIDE
        self._buf = bytearray()
        self._pending_eb = False
        return events

    # -- internals -------------------------------------------------------------------------------

    def _take(self, events: list[Event], chunk: bytes) -> None:
        """Append message content; switch to skipping (and report) when the cap is exceeded."""
        if len(self._buf) + len(chunk) > self.max_message_bytes:
            keep = min(HEAD_BYTES, self.max_message_bytes + 1)  # the same whatever the chunking
            head = (bytes(self._buf[:keep]) + chunk[:keep])[:keep]
            events.append(MessageTooLarge(head, self.max_message_bytes))
            self._buf = bytearray()
            self._state = _SKIPPING
        else:
            self._buf += chunk

    def _end_frame(self, events: list[Event]) -> None:
        if self._state == _INSIDE:
            events.append(bytes(self._buf))
        self._buf = bytearray()
        self._state = _OUTSIDE
