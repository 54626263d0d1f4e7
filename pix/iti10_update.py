"""ITI-10 PIX Update Notification (ITI TF-2a §3.10), HL7 v2.5: ADT^A31 built for a changed
cross-reference group, for each consumer restricted to its domains of interest. Sans-I/O: the
Twisted MLLP client that delivers them is `pix.mllp_edge.MllpUpdateSender`.

Message (§3.10.4.1.2): MSH-9 ADT^A31^ADT_A05, MSH-12 2.5; EVN (EVN-2 recorded date/time);
PID with PID-3 = every identifier of the person in the consumer's domains of interest, PID-5 the
empty name with name type S (no demographics are conveyed, as in the ITI-9 response); PV1 with
PV1-2 = N (patient class not applicable). A consumer for which the restricted list is empty is
not notified.
"""

from __future__ import annotations

from typing import Iterable, Protocol

import attrs

from pix import er7
from pix.xref import Identifier, XrefChange


@attrs.frozen
class Consumer:
    """A Patient Identifier Cross-reference Consumer registered for update notifications."""

    host: str
    port: int
    domains: tuple[str, ...]  # assigning authority OIDs of interest
    application: str = ""  # its MSH-5 / MSH-6 (HD.1), when configured
    facility: str = ""
    tls: bool = False  # MLLP over TLS, presenting the node's certificate (ITI-19)

    @property
    def name(self) -> str:
        return f"{self.host}:{self.port}"


class UpdateNotifier(Protocol):
    """What the HL7v2 service hands every XrefChange to (called on a worker thread)."""

    def notify(self, change: XrefChange) -> None: ...


def restricted(group: Iterable[Identifier], consumer: Consumer) -> tuple[Identifier, ...]:
    wanted = frozenset(consumer.domains)
    return tuple(i for i in group if i.authority in wanted)


def build_a31(
    group: Iterable[Identifier],
    consumer: Consumer,
    authorities: er7.AuthorityTable,
    *,
    sender: er7.ResponderIdentity = er7.ResponderIdentity(),
    control_id: str | None = None,
    timestamp: str | None = None,
) -> bytes | None:
    """The ADT^A31 for one group and one consumer; None when none of the group's identifiers is
    in the consumer's domains."""
    ids = restricted(group, consumer)
    if not ids:
        return None
    w = er7.Er7Writer()
    now = timestamp or er7.now_dtm()
    msh = w.segment(
        "MSH",
        w.encoding_characters,
        w.escape(sender.application),
        w.escape(sender.facility),
        w.escape(consumer.application),
        w.escape(consumer.facility),
        now,
        "",
        w.components("ADT", "A31", "ADT_A05"),
        w.escape(control_id or er7.new_control_id()),
        "P",
        "2.5",
    )
    evn = w.segment("EVN", "", now)
    pid3 = w.repetition.join(authorities.cx(w, i.value, i.authority, i.namespace, i.type_code) for i in ids)
    pid = w.segment("PID", "", "", pid3, "", w.repetition + w.component * 6 + "S")
    pv1 = w.segment("PV1", "", "N")
    return er7.encode([msh, evn, pid, pv1])


def notifications(change: XrefChange, consumers: Iterable[Consumer], authorities: er7.AuthorityTable, *,
                  sender: er7.ResponderIdentity = er7.ResponderIdentity()) -> list[tuple[Consumer, bytes]]:
    """Every (consumer, A31) a change calls for, in group order."""
    out: list[tuple[Consumer, bytes]] = []
    consumers = tuple(consumers)
    for group in change.groups:
        for consumer in consumers:
            message = build_a31(group, consumer, authorities, sender=sender)
            if message is not None:
                out.append((consumer, message))
    return out
