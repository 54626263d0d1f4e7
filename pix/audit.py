"""What the PIX transactions tell the AuditSink (DESIGN.md rule 9; atna.events builds the messages).

The HL7v3 endpoint (`pix.v3_endpoint.PixV3Manager.on_outcome`) reports each ITI-44 / ITI-45
outcome here; `v3_recorder(audit)` turns it into the `registry.ports.AuditRecord` the ITI TF-2b
§3.44.5.1 / §3.45.5.1 events need: the patient (one per event), the message id, the action
(ITI-44 revise = U, merge = D of the subsumed id then U of the surviving one), the query.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from lxml import etree

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


def v3_recorder(audit: AuditSink) -> Callable[[Any, TransactionContext], None]:
    """The `on_outcome` hook of PixV3Manager: one AuditRecord per ITI-44 / ITI-45 message."""

    def record(outcome: Any, context: TransactionContext) -> None:
        codes = tuple(d.code for d in getattr(outcome, "details", ()) if getattr(d, "code", None))
        if context.transaction == "ITI-45" or hasattr(outcome, "query_response_code"):
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
