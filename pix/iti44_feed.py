"""ITI-44 Patient Identity Feed HL7 V3 (ITI TF-2b §3.44) — the PIX Manager's side, Twisted-free.

PRPA_IN201301UV02 (add), PRPA_IN201302UV02 (revise) → `CrossReferences.feed`;
PRPA_IN201304UV02 (merge, §3.44.4.2) → `CrossReferences.merge`; each answered with an
MCCI_IN000002UV01 (§3.44.4.1.4, §3.44.4.2.4):

- AA when the cross-references were updated;
- AE with one acknowledgementDetail (HL7 table 0357 code, text, XPath location) when the message
  is unusable or a PIX rule refuses it (`PixError`: unknown domain 204, invalid identifier 102,
  missing element 101, more than one patient 100);
- AR with detail 207 (application internal error) when our side failed (`InfrastructureError`):
  HL7 v3 AcknowledgementType AR is "failed to process ... due to an unrelated error (e.g. not due
  to content, like database unavailable)"; never a domain code (DESIGN.md §3 rule 3).

The `XrefChange` of an accepted message is returned for ITI-46 (`pix.iti46_update`).
"""

from __future__ import annotations

import logging

import attrs
from lxml import etree

from pix import hl7v3 as V
from pix.xref import CrossReferences, PixError, XrefChange
from registry.errors import InfrastructureError

log = logging.getLogger("carnet.pix")

TRANSACTION = "ITI-44"


@attrs.frozen(eq=False)
class FeedOutcome:
    """The ack to send, its typeCode, and what changed (None unless AA)."""

    ack: etree._Element
    type_code: str
    details: tuple[V.AckDetail, ...] = ()
    message: V.FeedMessage | None = None
    change: XrefChange | None = None


def v3_location(error: PixError, interaction: str) -> str:
    """The XPath an error points at: its own if it is one, else the element of the HL7 v2
    field the store names (PID-3 → patient/id, MRG-1 → priorRegisteredRole/id)."""
    where = error.location or ""
    if where.startswith("/"):
        return where
    if where.startswith("MRG"):
        return V.location("prior", interaction)
    return V.location("patient_id", interaction)


def _detail(error: PixError, interaction: str) -> V.AckDetail:
    return V.AckDetail(code=error.hl7_code, text=str(error), location=v3_location(error, interaction))


INTERNAL_ERROR = V.AckDetail(V.APPLICATION_INTERNAL_ERROR, "the PIX Manager could not process the message; retry later")


def patient_identity_feed(
    body: etree._Element, xref: CrossReferences, responder: V.Responder, *, expected: str | None = None
) -> FeedOutcome:
    """Handle one ITI-44 message (the SOAP Body's element). Raises `hl7v3.WrongInteraction`
    when the body is not the message `expected` (the endpoint answers a SOAP Sender fault)."""
    try:
        message = V.parse_feed(body, expected)
    except V.Hl7v3MessageError as exc:
        header = V.parse_header(body)
        detail = _detail(exc, header.interaction)
        return FeedOutcome(V.build_ack(header, V.AE, [detail], responder), V.AE, (detail,))
    try:
        if message.subsumed is not None:
            change = xref.merge(message.record, message.subsumed)
        else:
            change = xref.feed(message.record)
    except PixError as exc:
        detail = _detail(exc, message.interaction)
        return FeedOutcome(V.build_ack(message.header, V.AE, [detail], responder), V.AE, (detail,), message)
    except InfrastructureError as exc:
        log.error("ITI-44 %s: store failure: %s", message.interaction, exc)
        ack = V.build_ack(message.header, V.AR, [INTERNAL_ERROR], responder)
        return FeedOutcome(ack, V.AR, (INTERNAL_ERROR,), message)
    return FeedOutcome(V.build_ack(message.header, V.AA, [], responder), V.AA, (), message, change)
