"""Time-ordered UUIDs (version 7, RFC 9562 §5.7) for the keys Carnet assigns itself: the
registry's entryUUIDs, the audit events' ids (the spool's and the ARR's unique `event_id` /
`dedupe_key`) and the ARR's record ids.

Why not version 4: the registry's entryUUIDs (and the ARR's record ids) are the keys of several
B-tree indexes each (`document_entry`, `association` source and target, `document_code`,
`submission_set`, …). Random keys land each insertion on a random leaf page of indexes that hold
millions of entries, so that every registration dirties pages spread across the whole index:
buffer misses, a full-page image in PostgreSQL's WAL for each first touch since the last
checkpoint (5–7 per registration, 52–65 KB of WAL, measured on the 1 M-entry bench; 15 KB and
almost no full-page image with version 7). SQLite's B-trees have the same locality; there it was
not measured. A version 7 UUID begins with the Unix time in milliseconds, so keys made close in
time sort close together and new rows go to the same few pages.

Layout (RFC 9562 §5.7): 48 bits of Unix milliseconds, version 0111, 12 bits that carry the
sub-millisecond fraction (§6.2 method 3, so that ids of one process keep their order), variant
10, 62 random bits from `os.urandom`. They are ordinary UUIDs: an entryUUID is `urn:uuid:` and an
RFC 4122 UUID (ITI TF-3 §4.2.3.2.10), and RFC 9562 obsoletes RFC 4122 with the same layout plus
version 7; the validator (`registry.validate.formats`) accepts any version.

What they disclose: the time (to the millisecond) at which the registry assigned them, which the
registry already shows as the SubmissionSet's submissionTime.
"""

from __future__ import annotations

import os
import time

URN_PREFIX = "urn:uuid:"
_RAND_B = (1 << 62) - 1
_VERSION_VARIANT = (0x7 << 76) | (0b10 << 62)


def uuid7_ints(n: int) -> list[int]:
    """n version 7 UUIDs as 128-bit integers, sharing one timestamp and one os.urandom call."""
    ns = time.time_ns()
    ms, sub = divmod(ns, 1_000_000)
    head = (ms & 0xFFFF_FFFF_FFFF) << 80 | (sub * 4096 // 1_000_000) << 64 | _VERSION_VARIANT
    raw = os.urandom(8 * n)
    return [head | (int.from_bytes(raw[k : k + 8], "big") & _RAND_B) for k in range(0, 8 * n, 8)]


def uuid7_strs(n: int, prefix: str = "") -> list[str]:
    """n fresh version 7 UUIDs in the canonical form (lower-case, 8-4-4-4-12), after `prefix`."""
    out = []
    for v in uuid7_ints(n):
        h = f"{v:032x}"
        out.append(f"{prefix}{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}")
    return out


def uuid7_urns(n: int) -> list[str]:
    """n fresh version 7 UUIDs as `urn:uuid:` strings."""
    return uuid7_strs(n, URN_PREFIX)


def uuid7_hex() -> str:
    """One fresh version 7 UUID as 32 hex digits (the form of `uuid.UUID.hex`)."""
    return f"{uuid7_ints(1)[0]:032x}"
