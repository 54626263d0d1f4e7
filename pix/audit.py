"""What the PIX transactions tell the AuditSink (DESIGN.md rule 9; atna.events builds the messages).

The HL7v2 service (`pix.hl7v2_service.Hl7v2Service.on_outcome`) reports each ITI-8 / ITI-9
message with its final answer; `v2_recorder(audit)` makes the ITI TF-2a §3.8.5.1 / §3.9.5.1
record: the patient (the first PID-3 / QPD-3 identifier), MSH-10, the sending and receiving
facility|application, the action (A08/A31 update = U, A40 merge with MRG-1 as the merged id),
the QPD segment of a query.

The HL7v3 endpoint (`pix.v3_endpoint.PixV3Manager.on_outcome`) reports each ITI-44 / ITI-45
outcome here; `v3_recorder(audit)` turns it into the `registry.ports.AuditRecord` the ITI TF-2b
§3.44.5.1 / §3.45.5.1 events need: the patient (one per event), the message id, the action
(ITI-44 revise = U, merge = D of the subsumed id then U of the surviving one), the query.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from lxml import etree

from pix.iti45_query import QueryOutcome
from pix.xref import Identifier
from registry.ports import AuditRecord, AuditSink, TransactionContext

log = logging.getLogger("carnet.pix")

_SUCCESS = {"AA": "success", "CA": "success"}


def _outcome(type_code: str) -> str:
    # AE: the sender's message was refused (minor failure, ITI TF-2a §3.20.7.2 EventOutcomeIndicator 4);
    # AR: the manager could not process it (8).
    return _SUCCESS.get(type_code, "minor-failure" if type_code == "AE" else "serious-failure")


def _ii(ii: Any) -> str | None:
    if ii is None or not getattr(ii, "root", ""):
        return None
    return f"{ii.root}^{ii.extension}" if ii.extension else ii.root


def _cx(identifier: Identifier | None) -> tuple[str, ...]:
    return (identifier.xds_cx(),) if identifier is not None else ()


def _msa_code(answer: bytes) -> str:
    """MSA-1 of one of our own answers (ER7 we built: MSH field separator, `\r` segment ends)."""
    sep = answer[3:4] or b"|"
    for segment in answer.split(b"\r"):
        if segment.startswith(b"MSA" + sep):
            return segment.split(sep)[1].decode("ascii", "replace")
    return "AE"


def _hd(application: str, facility: str, comp: str) -> str:
    # "facility|application" as IHE's audit examples name an HL7v2 system (ITI TF-2a §3.8.5.1.1)
    return f"{facility.split(comp)[0]}|{application.split(comp)[0]}"


def _first_cx(msg: Any, segment: Any, field: int) -> tuple[str, ...]:
    reps = msg.repetitions(segment, field) if segment is not None else []
    for rep in reps:
        value = rep[0][0] if rep and rep[0] else ""
        oid = rep[3][1] if len(rep) > 3 and len(rep[3]) > 1 else ""
        if value and oid:
            return (f"{value}^^^&{oid}&ISO",)
    return ()


def v2_record(msg: Any, answer: bytes, peer: str | None) -> AuditRecord:
    """The AuditRecord of one ITI-8 / ITI-9 message and its final answer."""
    h = msg.header
    comp = h.component_separator
    ack = _msa_code(answer)
    outcome = _outcome(ack)
    common = dict(
        outcome=outcome,
        role="pix-manager",
        hl7_message_id=h.control_id or None,
        peer_user_id=_hd(h.sending_application, h.sending_facility, comp),
        local_user_id=_hd(h.receiving_application, h.receiving_facility, comp),
        error_codes=() if outcome == "success" else (f"MSA-1 {ack}",),
    )
    if h.message_code == "QBP":
        qpd = msg.first("QPD")
        return AuditRecord(
            transaction="ITI-9",
            context=TransactionContext("ITI-9", message_id=h.control_id or None, remote_host=peer),
            patient_ids=_first_cx(msg, qpd, 3),
            query_id=msg.value(qpd, 2) if qpd is not None else None,
            query_body=str(qpd).encode("utf-8") if qpd is not None else None,
            **common,
        )
    event = h.trigger_event
    return AuditRecord(
        transaction="ITI-8",
        context=TransactionContext("ITI-8", message_id=h.control_id or None, remote_host=peer),
        patient_ids=_first_cx(msg, msg.first("PID"), 3),
        merged_patient_ids=_first_cx(msg, msg.first("MRG"), 1) if event == "A40" else (),
        action="U" if event in ("A08", "A31", "A40") else "C",
        **common,
    )


class v2_recorder:  # noqa: N801 - used like the function it replaces
    """The `on_outcome` hook of Hl7v2Service: one AuditRecord per ITI-8 / ITI-9 message; a batch
    of pipelined messages is recorded with one `record_many` (one spool commit) when the sink
    has it, before any of their answers is sent."""

    def __init__(self, audit: AuditSink) -> None:
        self.audit = audit

    def __call__(self, msg: Any, answer: bytes, peer: str | None) -> None:
        self.audit.record(v2_record(msg, answer, peer))

    def batch(self, items: Any, peer: str | None) -> None:
        records = [v2_record(msg, answer, peer) for msg, answer in items]
        record_many = getattr(self.audit, "record_many", None)
        if record_many is not None:
            record_many(records)
        else:
            for r in records:
                self.audit.record(r)


def v3_recorder(audit: AuditSink) -> Callable[[Any, TransactionContext], None]:
    """The `on_outcome` hook of PixV3Manager: one AuditRecord per ITI-44 / ITI-45 message."""

    def record(outcome: Any, context: TransactionContext) -> None:
        codes = tuple(d.code for d in getattr(outcome, "details", ()) if getattr(d, "code", None))
        if isinstance(outcome, QueryOutcome):
            query = getattr(outcome, "query", None)
            audit.record(AuditRecord(
                transaction="ITI-45",
                outcome=_outcome(outcome.type_code),
                context=context,
                role="pix-manager",
                patient_ids=_cx(query.patient_identifier if query is not None else None),
                hl7_message_id=_ii(query.header.message_id) if query is not None else None,
                query_body=etree.tostring(query.query_by_parameter) if query is not None else None,
                error_codes=codes,
            ))
            return
        message = getattr(outcome, "message", None)
        record_ = getattr(message, "record", None)
        ids = record_.identifiers if record_ is not None else ()
        subsumed = getattr(message, "subsumed", None)
        interaction = getattr(message, "interaction", "") if message is not None else ""
        action = "U" if interaction.startswith("PRPA_IN201302") or subsumed is not None else "C"
        audit.record(AuditRecord(
            transaction="ITI-44",
            outcome=_outcome(outcome.type_code),
            context=context,
            role="pix-manager",
            patient_ids=_cx(ids[0]) if ids else (),
            merged_patient_ids=_cx(subsumed),
            action=action,
            hl7_message_id=_ii(message.header.message_id) if message is not None else None,
            error_codes=codes,
        ))

    return record


def iti10_recorder(audit: AuditSink) -> Callable[[Any, bytes, str], None]:
    """`MllpUpdateSender.on_outcome`: the ITI-10 event of a notification the consumer answered
    (ITI TF-2a §3.10.5.1: the PIX Manager as Source, the consumer as Destination)."""
    from pix import er7

    def record(consumer: Any, message: bytes, code: str) -> None:
        msg = er7.parse(message)  # our own A31
        h = msg.header
        comp = h.component_separator
        outcome = _outcome(code)
        audit.record(AuditRecord(
            transaction="ITI-10",
            outcome=outcome,
            context=TransactionContext("ITI-10", message_id=h.control_id or None),
            role="pix-manager",
            patient_ids=_first_cx(msg, msg.first("PID"), 3),
            hl7_message_id=h.control_id or None,
            local_user_id=_hd(h.sending_application, h.sending_facility, comp),
            peer_user_id=_hd(h.receiving_application, h.receiving_facility, comp),
            peer_address=consumer.host,
            error_codes=() if outcome == "success" else (f"MSA-1 {code}",),
        ))

    return record


def iti46_recorder(audit: AuditSink) -> Callable[[Any, str], None]:
    """`UpdateSender.on_outcome`: the ITI-46 event of a notification the consumer answered
    (ITI TF-2b §3.46.5.1)."""
    from urllib.parse import urlsplit

    def record(item: Any, type_code: str) -> None:
        outcome = _outcome(type_code)
        audit.record(AuditRecord(
            transaction="ITI-46",
            outcome=outcome,
            context=TransactionContext("ITI-46", message_id=item.message_id),
            role="pix-manager",
            patient_ids=_cx(item.identifiers[0]) if item.identifiers else (),
            hl7_message_id=item.message_id,
            peer_user_id=item.consumer.url,
            peer_address=urlsplit(item.consumer.url).hostname,
            error_codes=() if outcome == "success" else (f"acknowledgement {type_code}",),
        ))

    return record
