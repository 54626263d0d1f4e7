"""Micro benchmark of the blob encryption (`python -m bench.crypto_bench [--mb 100]`).

Encrypts and decrypts N MB with repository.crypto's streaming segmented AES-256-GCM, the input
fed in chunks the size a network read or a blob store read gives, and prints MB/s next to the
floor measured in the same run: raw `AESGCM` over the same bytes (one call, no segments, and a
bare per-segment loop with no streaming bookkeeping). Best of `--repeat` runs. A report, not a
test: no threshold fails it.
"""

from __future__ import annotations

import argparse
import os
import struct
import time
from typing import Callable

from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from repository.crypto import DEFAULT_SEGMENT_SIZE, DataKey, DocumentBinding, SegmentDecryptor, SegmentEncryptor

DOC = DocumentBinding("1.2.250.1.999.1", "1.2.250.1.999.2.1")


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def stream(make, data: memoryview, chunk: int) -> int:
    """Feed `data` in chunks, drop the output as a sink would; returns bytes produced."""
    worker = make()
    out = 0
    for i in range(0, len(data), chunk):
        out += len(worker.update(data[i : i + chunk]))
    return out + len(worker.finalize())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.crypto_bench")
    ap.add_argument("--mb", type=int, default=100)
    ap.add_argument("--segment", type=int, default=DEFAULT_SEGMENT_SIZE)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args(argv)
    size = args.mb * 1024 * 1024
    seg = args.segment
    plaintext = os.urandom(size)
    key = DataKey.generate()
    aead = AESGCM(key.key)
    nonce = os.urandom(12)

    enc = SegmentEncryptor(key, DOC, seg)
    blob = enc.update(plaintext) + enc.finalize()
    one_shot = aead.encrypt(nonce, plaintext, b"")
    pview, bview = memoryview(plaintext), memoryview(blob)

    def raw_segments_encrypt() -> None:
        sink = bytearray(seg + 16)
        for n, i in enumerate(range(0, size, seg)):
            aead.encrypt_into(struct.pack(">8sI", b"\0" * 8, n), pview[i : i + seg], b"", sink)

    rows = [
        ("floor: AESGCM.encrypt, one call", best(lambda: aead.encrypt(nonce, plaintext, b""), args.repeat)),
        ("floor: AESGCM.decrypt, one call", best(lambda: aead.decrypt(nonce, one_shot, b""), args.repeat)),
        (f"floor: AESGCM.encrypt_into per {seg // 1024} KiB segment", best(raw_segments_encrypt, args.repeat)),
    ]
    def encrypting(chunk: int) -> Callable[[], int]:
        return lambda: stream(lambda: SegmentEncryptor(key, DOC, seg), pview, chunk)

    def decrypting(chunk: int) -> Callable[[], int]:
        return lambda: stream(lambda: SegmentDecryptor(key, DOC), bview, chunk)

    for chunk in (64 * 1024, 1024 * 1024):
        label = f"{chunk // 1024} KiB chunks"
        rows.append((f"SegmentEncryptor, {label}", best(encrypting(chunk), args.repeat)))
        rows.append((f"SegmentDecryptor, {label}", best(decrypting(chunk), args.repeat)))
    rows.append(("SegmentEncryptor, whole document in one update", best(encrypting(size), args.repeat)))

    print(f"blob encryption: {args.mb} MiB, segments of {seg // 1024} KiB, best of {args.repeat}")
    for label, seconds in rows:
        print(f"  {label:<52} {size / seconds / 1e6:8.0f} MB/s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
