"""The PIX Manager's HL7 v3 SOAP operations (ITI-44, ITI-45), served at `/pix/v3` — Twisted-free.

`PixV3Manager(xref, notifier).operations()` maps each wsa:Action of PIXManager.wsdl to a
`FunctionOperation` that `soap.edge.SoapEndpoint` runs on its thread pool. A body that is not
the message its action announces is a SOAP Sender fault; everything else is answered in HL7 v3
(MCCI_IN000002UV01 / PRPA_IN201310UV02, see `pix.iti44_feed`, `pix.iti45_query`). After an
accepted feed whose cross-references changed, the notifier (ITI-46, `pix.v3_edge.UpdateSender`)
gets the change; it never delays nor fails the acknowledgement.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any, Callable

import attrs

from pix import hl7v3 as V
from pix.iti44_feed import FeedOutcome, patient_identity_feed
from pix.iti45_query import QueryOutcome, pix_query
from pix.iti46_update import UpdateNotifier
from pix.v3_wsdl import ACK_ACTION, QUERY_RESPONSE_ACTION
from pix.xref import CrossReferences
from soap.envelope import SenderFault, SoapRequest
from soap.operation import FunctionOperation, SoapReply

log = logging.getLogger("carnet.pix")

# The device id answers carry when none is configured and the request named none: an OID
# under 2.25 (ITU-T X.667, from a UUID) that stands for "a Carnet PIX Manager".
DEFAULT_DEVICE_ID = "2.25." + str(uuid.uuid5(uuid.NAMESPACE_URL, "urn:carnet:pix-manager").int)

ACTIONS = {
    V.ADD: "urn:hl7-org:v3:PRPA_IN201301UV02",
    V.REVISE: "urn:hl7-org:v3:PRPA_IN201302UV02",
    V.MERGE: "urn:hl7-org:v3:PRPA_IN201304UV02",
    V.QUERY: "urn:hl7-org:v3:PRPA_IN201309UV02",
}


@attrs.define
class PixV3Manager:
    """The Patient Identifier Cross-reference Manager, HL7 v3 side.

    `device_id`: the manager's device OID in answers and notifications; None: answer with the
    receiver device id the request addressed (else DEFAULT_DEVICE_ID). `now` / `new_id`: the
    clock and message id source (tests make them deterministic)."""

    xref: CrossReferences
    notifier: UpdateNotifier | None = None
    device_id: str | None = None
    now: Callable[[], str] | None = None
    new_id: Callable[[], str] | None = None
    # Called with each outcome (FeedOutcome / QueryOutcome) and the context: the audit hook.
    on_outcome: Callable[[Any, Any], None] | None = None

    def responder(self, request: SoapRequest) -> V.Responder:
        device = self.device_id
        if not device:
            addressed = V.parse_header(request.body).receiver_device
            device = addressed.root if addressed.root and not addressed.null_flavor else DEFAULT_DEVICE_ID
        return V.Responder(device, self.now, self.new_id)

    # --- ITI-44 Patient Identity Feed HL7 V3 (ITI TF-2b §3.44) -----------------------------------
    def _feed(self, interaction: str) -> Callable[[SoapRequest, Any], SoapReply]:
        def handle(request: SoapRequest, context: Any) -> SoapReply:
            try:
                outcome = patient_identity_feed(request.body, self.xref, self.responder(request), expected=interaction)
            except V.WrongInteraction as exc:
                raise SenderFault(f"the SOAP Body holds {request.body.tag}; {ACTIONS[interaction]} expects {interaction}") from exc
            self._after_feed(outcome)
            self._report(outcome, context)
            return SoapReply(outcome.ack)

        return handle

    def _after_feed(self, outcome: FeedOutcome) -> None:
        if self.notifier is None or outcome.change is None or not outcome.change.groups:
            return
        try:
            self.notifier.notify(outcome.change)
        except Exception:  # noqa: BLE001 - ITI-46 never fails the feed (it is sent afterwards)
            log.exception("ITI-46: could not queue the update notifications")

    # --- ITI-45 PIXV3 Query (ITI TF-2b §3.45) ----------------------------------------------------
    def query(self, request: SoapRequest, context: Any) -> SoapReply:
        try:
            outcome: QueryOutcome = pix_query(request.body, self.xref, self.responder(request))
        except V.WrongInteraction as exc:
            raise SenderFault(f"the SOAP Body holds {request.body.tag}; {ACTIONS[V.QUERY]} expects {V.QUERY}") from exc
        self._report(outcome, context)
        return SoapReply(outcome.response)

    def _report(self, outcome: Any, context: Any) -> None:
        if self.on_outcome is None:
            return
        try:
            self.on_outcome(outcome, context)
        except Exception:  # noqa: BLE001 - a failing audit hook must not lose the answer
            log.exception("PIX v3 outcome hook failed")

    def operations(self) -> dict[str, FunctionOperation]:
        ops = [
            FunctionOperation(ACTIONS[V.ADD], ACK_ACTION, self._feed(V.ADD), "ITI-44"),
            FunctionOperation(ACTIONS[V.REVISE], ACK_ACTION, self._feed(V.REVISE), "ITI-44"),
            FunctionOperation(ACTIONS[V.MERGE], ACK_ACTION, self._feed(V.MERGE), "ITI-44"),
            FunctionOperation(ACTIONS[V.QUERY], QUERY_RESPONSE_ACTION, self.query, "ITI-45"),
        ]
        return {op.action: op for op in ops}
