"""A Carnet-like audit process for the durability test: `spool N` records N events through the
SpoolingAuditSink (then keeps trying to send them), `drain` only sends. Runs until killed or SIGTERM.

    python spool_child.py SPOOL_DB MODE N HOST PORT CERT KEY CA
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path[:0] = [str(Path(__file__).resolve().parents[2])]


def main() -> None:
    db, mode, n, host, port, cert, key, ca = sys.argv[1:9]
    from twisted.internet import reactor

    from atna.sender import AuditSender, Backoff, Destination, SpoolingAuditSink, TlsClientSettings
    from atna.spool import Spool
    from registry.ports import AuditRecord, TransactionContext

    spool = Spool(db)
    destination = Destination(
        "arr", "tls", host, int(port), TlsClientSettings(Path(cert), Path(key), Path(ca), "localhost")
    )
    sender = AuditSender(reactor, spool, [destination], backoff=Backoff(0.1, 2.0, 1.0), poll_interval=0.1,
                         settle_seconds=0.5, lease_ttl=5)
    if mode == "spool":
        sink = SpoolingAuditSink(
            spool,
            lambda record, node, now: b"<AuditMessage><EventIdentification EventActionCode=\"R\"/>"
            + record.transaction.encode() + b"</AuditMessage>",
            hostname="carnet-child",
        )
        for i in range(int(n)):
            sink.record(AuditRecord(f"ITI-{i}", "success", TransactionContext(f"ITI-{i}")))
        print("spooled", flush=True)
    reactor.callWhenRunning(sender.start)
    reactor.addSystemEventTrigger("before", "shutdown", sender.stop)
    reactor.run()
    spool.close()


if __name__ == "__main__":
    main()
