"""ITI-46 PIXV3 Update Notification (ITI TF-2b §3.46) — what to send, Twisted-free.

§3.46.4.1.1: the PIX Manager notifies a Patient Identifier Cross-reference Consumer when a set of
cross-referenced identifiers changes for any identifier of a domain of interest to it; the domains
of interest of each consumer are configuration kept by the manager. For each changed group
(`XrefChange.groups`) and each consumer, one PRPA_IN201302UV02 carrying the group's identifiers in
that consumer's domains (§3.46.4.1.2: Patient.id, no demographics); none when the group has no
identifier in them. Sending (SOAP, retries, queue) is `pix.v3_edge.UpdateSender`'s business.
"""

from __future__ import annotations

from typing import Iterable, Mapping, Protocol, Sequence

import attrs

from pix import hl7v3 as V
from pix.xref import Identifier, XrefChange
from soap.envelope import serialize_element

TRANSACTION = "ITI-46"
ACTION = "urn:hl7-org:v3:PRPA_IN201302UV02"  # PIXConsumer.wsdl (ITI TF-2b §3.46.5)
RESPONSE_ACTION = "urn:hl7-org:v3:MCCI_IN000002UV01"


@attrs.frozen
class Consumer:
    """A configured Patient Identifier Cross-reference Consumer: its endpoint, its domains of
    interest (assigning authority OIDs; empty: every domain) and its device id (receiver)."""

    url: str
    domains: frozenset[str] = attrs.field(default=frozenset(), converter=frozenset)
    device_id: str = ""
    name: str = ""

    @classmethod
    def from_mapping(cls, data: Mapping[str, object]) -> "Consumer":
        """From settings: {url, domains = [...], device_id, name}."""
        return cls(
            url=str(data["url"]),
            domains=frozenset(str(d) for d in data.get("domains", ()) or ()),  # type: ignore[union-attr]
            device_id=str(data.get("device_id", "") or ""),
            name=str(data.get("name", "") or data["url"]),
        )

    def wants(self, identifier: Identifier) -> bool:
        return not self.domains or identifier.authority in self.domains


@attrs.frozen
class Notification:
    """One PRPA_IN201302UV02 for one consumer (`body`: the element's UTF-8 bytes)."""

    consumer: Consumer
    identifiers: tuple[Identifier, ...]
    message_id: str
    body: bytes


class UpdateNotifier(Protocol):
    def notify(self, change: XrefChange) -> None:
        """Send the notifications of `change`; must not block (called on a worker thread)."""
        ...


def notifications(change: XrefChange, consumers: Iterable[Consumer], responder: V.Responder) -> list[Notification]:
    out = []
    for group in change.groups:
        for consumer in consumers:
            wanted = tuple(i for i in group if consumer.wants(i))
            if not wanted:
                continue
            element = V.build_update_notification(wanted, responder, receiver_device=consumer.device_id)
            message_id = element.find(V.h("id")).get("root")
            out.append(Notification(consumer, wanted, message_id, serialize_element(element)))
    return out


def consumers_from_settings(items: Sequence[Mapping[str, object]]) -> tuple[Consumer, ...]:
    return tuple(Consumer.from_mapping(item) for item in items)
