"""The `RegistryClient` port: how the Document Repository registers documents (ITI-42, ITI TF-2b §3.42).

ITI TF-2b §3.41.4.1.3: after storing the documents, the repository sends Register Document Set-b to
the registry and returns the registry's errors to the Document Source. Two adapters:

- `InProcessRegistryClient`: both actors in one Carnet; calls `registry.iti42_register.register` on
  the `DocumentRegistry`'s store with its configuration, and records the registry's own ITI-42
  audit event through the registry's AuditSink, as the SOAP endpoint would;
- `SoapRegistryClient`: the registry elsewhere; posts an ITI-42 SOAP 1.2 message with WS-Addressing
  (blocking, `http.client`: call it on a worker thread) and parses the rs:RegistryResponse.

Either raises `RegistryUnavailable` when the registry cannot be reached (the repository answers
XDSRegistryNotAvailable); registry-side failures come back as errors in `RegistryOutcome`.
`known_document_unique_ids` serves the orphan sweep (`repository.sweep`).
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import urllib.parse
from typing import Any, Iterable, Protocol, Sequence
from xml.sax.saxutils import escape

import attrs
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry.errors import InfrastructureError, RegistryError, RelayedCode, XdsErrorCode
from registry.model import SubmitObjectsRequest
from registry.ports import AuditRecord, TransactionContext
from soap.envelope import NS_SOAP12, NS_WSA, WSA_ANONYMOUS, new_message_id
from soap.xmlparse import XmlInputError, parse_xml

log = logging.getLogger("carnet.repository")

E = XdsErrorCode
_RS = f"{{{C.NS_RS}}}"
_RIM = f"{{{C.NS_RIM}}}"
_QUERY = f"{{{C.NS_QUERY}}}"
_ENV = f"{{{NS_SOAP12}}}"
_WSA = f"{{{NS_WSA}}}"
_SEVERITIES = {C.SEVERITY_ERROR, C.SEVERITY_WARNING}


class RegistryUnavailable(Exception):
    """The registry could not be reached or did not answer (XDSRegistryNotAvailable).
    `delivered`: False only when the request certainly never reached the registry (no connection);
    otherwise it may have been processed and its answer lost."""

    def __init__(self, message: str, *, delivered: bool = True) -> None:
        super().__init__(message)
        self.delivered = delivered


@attrs.frozen
class RegistryOutcome:
    """The registry's answer to ITI-42: its status and every error/warning it returned."""

    status: str
    errors: tuple[RegistryError, ...] = ()

    @property
    def failed(self) -> bool:
        return self.status != C.RESPONSE_SUCCESS or any(e.is_error for e in self.errors)


class RegistryClient(Protocol):
    def register(self, request: SubmitObjectsRequest, context: TransactionContext | None = None) -> RegistryOutcome:
        """ITI-42 Register Document Set-b of `request`. Raises RegistryUnavailable."""
        ...

    def known_document_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        """Those of `unique_ids` the registry holds a DocumentEntry for. Raises RegistryUnavailable."""
        ...


def _outcome(errors: Sequence[RegistryError]) -> RegistryOutcome:
    failed = any(e.is_error for e in errors)
    return RegistryOutcome(C.RESPONSE_FAILURE if failed else C.RESPONSE_SUCCESS, tuple(errors))


# --------------------------------------------------------------------------------------- in process


_LOCAL_HOST = socket.gethostname()


def audit_document_source(audit: Any, request: SubmitObjectsRequest, outcome: "RegistryOutcome",
                          registry_url: str | None, registry_host: str | None,
                          context: TransactionContext | None) -> None:
    """The repository's ITI-42 export event (ITI TF-2b §3.42.5.1.1, Document Source role)."""
    if audit is None:
        return
    ss = request.submission_sets
    try:
        audit.record(AuditRecord(
            transaction="ITI-42",
            outcome="success" if not outcome.failed else "serious-failure",
            context=TransactionContext("ITI-42", message_id=getattr(context, "message_id", None),
                                       user=getattr(context, "user", None)),
            role="document-source",
            patient_ids=tuple({p for s in ss if (p := s.patient_id)}),
            submission_set_unique_id=ss[0].unique_id if ss else None,
            error_codes=tuple(e.code.value for e in outcome.errors if e.is_error),
            peer_user_id=registry_url,
            peer_address=registry_host,
        ))
    except Exception:  # noqa: BLE001 - a failing audit sink must not lose the answer
        log.exception("audit sink failed for the repository's ITI-42")


@attrs.define
class InProcessRegistryClient:
    """The registry of the same Carnet (`registry.endpoint.DocumentRegistry`): same validation,
    patient port, clock and audit as its ITI-42 endpoint."""

    registry: Any  # registry.endpoint.DocumentRegistry
    audit: Any = None  # AuditSink for the repository's own ITI-42 (Document Source role)
    registry_url: str | None = None  # how the audit names the registry (this node's endpoint)

    def register(self, request: SubmitObjectsRequest, context: TransactionContext | None = None) -> RegistryOutcome:
        # The registry's ITI-42 event names this node as the Source (ITI TF-2b §3.42.5.1.2);
        # endpoint None: the registry's own URL comes from the audit node's endpoints.
        ctx = TransactionContext(
            transaction="ITI-42",
            message_id=getattr(context, "message_id", None),
            remote_host=_LOCAL_HOST,
            endpoint=None,
            user=getattr(context, "user", None),
        )
        errors = self.registry.register_submission(request, ctx)
        outcome = _outcome(errors)
        audit_document_source(self.audit, request, outcome, self.registry_url, _LOCAL_HOST, context)
        return outcome

    def known_document_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        wanted = list(dict.fromkeys(unique_ids))
        if not wanted:
            return set()
        try:
            with self.registry.store.registration() as session:
                return set(session.documents_by_unique_id(wanted))
        except InfrastructureError as exc:
            raise RegistryUnavailable(str(exc)) from exc


# --------------------------------------------------------------------------------------- over SOAP


def soap_request_envelope(action: str, body: bytes, *, to: str, message_id: str | None = None) -> bytes:
    """A SOAP 1.2 request with WS-Addressing (ITI TF-2x Appendix V: Action, MessageID, ReplyTo, To);
    `body`: the UTF-8 bytes of one element, copied as is."""
    return b"".join(
        [
            b'<?xml version="1.0" encoding="UTF-8"?>\n',
            f'<env:Envelope xmlns:env="{NS_SOAP12}" xmlns:wsa="{NS_WSA}"><env:Header>'.encode(),
            f'<wsa:Action env:mustUnderstand="1">{escape(action)}</wsa:Action>'.encode(),
            f"<wsa:MessageID>{escape(message_id or new_message_id())}</wsa:MessageID>".encode(),
            f"<wsa:ReplyTo><wsa:Address>{WSA_ANONYMOUS}</wsa:Address></wsa:ReplyTo>".encode(),
            f'<wsa:To env:mustUnderstand="1">{escape(to)}</wsa:To>'.encode(),
            b"</env:Header><env:Body>",
            body,
            b"</env:Body></env:Envelope>",
        ]
    )


def parse_registry_response(element: etree._Element) -> RegistryOutcome:
    """rs:RegistryResponse → RegistryOutcome (ITI TF-3 §4.2.4). An error code outside XdsErrorCode
    is kept as it was sent (`RelayedCode`): the repository returns the registry's errors to the
    Document Source (ITI TF-2b §3.41.4.1.3). Only a missing or blank code becomes XDSRegistryError."""
    status = element.get("status") or ""
    errors: list[RegistryError] = []
    for el in element.iter(_RS + "RegistryError"):
        raw = el.get("errorCode") or ""
        try:
            code = XdsErrorCode(raw)
            message = el.get("codeContext") or (el.text or "").strip()
        except ValueError:
            if raw.strip():
                code = RelayedCode(raw.strip())
                message = el.get("codeContext") or (el.text or "").strip()
            else:
                code = E.XDSRegistryError
                message = f"(no errorCode): {el.get('codeContext') or (el.text or '').strip()}"
        severity = el.get("severity") or C.SEVERITY_ERROR
        errors.append(RegistryError(code, message, el.get("location") or "",
                                    severity if severity in _SEVERITIES else C.SEVERITY_ERROR))
    if status != C.RESPONSE_SUCCESS and not any(e.is_error for e in errors):
        errors.append(RegistryError(E.XDSRegistryError, f"the registry answered {status or 'no status'}"))
    return RegistryOutcome(status, tuple(errors))


@attrs.define
class SoapRegistryClient:
    """A Document Registry at `url` (http or https), ITI-42 and ITI-18 over SOAP 1.2.
    `ssl_context`: for https (client certificate, trusted CAs). Blocking: call on a worker thread."""

    url: str
    timeout: float = 30.0
    ssl_context: ssl.SSLContext | None = None
    audit: Any = None  # AuditSink for the repository's ITI-42 export event (Document Source role)

    def register(self, request: SubmitObjectsRequest, context: TransactionContext | None = None) -> RegistryOutcome:
        body = ebrim.submit_objects_request_to_bytes(request)
        try:
            response = self._call(C.ACTION_ITI42, body)
            found = response.find(_RS + "RegistryResponse") if response.tag != _RS + "RegistryResponse" else response
            if found is None:
                raise RegistryUnavailable("the registry's answer holds no rs:RegistryResponse")
            outcome = parse_registry_response(found)
        except RegistryUnavailable:
            failed = RegistryOutcome(C.RESPONSE_FAILURE, (RegistryError(XdsErrorCode.XDSRegistryNotAvailable, "unreachable"),))
            audit_document_source(self.audit, request, failed, self.url, urllib.parse.urlsplit(self.url).hostname, context)
            raise
        audit_document_source(self.audit, request, outcome, self.url, urllib.parse.urlsplit(self.url).hostname, context)
        return outcome

    def known_document_unique_ids(self, unique_ids: Iterable[str]) -> set[str]:
        """ITI-18 GetDocuments by uniqueId, ObjectRef (ITI TF-2a §3.18.4.1.2.3.7.5), one per id."""
        known: set[str] = set()
        for uid in dict.fromkeys(unique_ids):
            body = _get_documents_by_unique_id(uid)
            response = self._call(C.ACTION_ITI18, body)
            if response.tag != _QUERY + "AdhocQueryResponse":
                raise RegistryUnavailable("the registry's answer holds no query:AdhocQueryResponse")
            if response.get("status") == C.RESPONSE_FAILURE:
                raise RegistryUnavailable("the registry failed the GetDocuments query")
            if response.find(f".//{_RIM}ObjectRef") is not None or response.find(f".//{_RIM}ExtrinsicObject") is not None:
                known.add(uid)
        return known

    # --- transport -----------------------------------------------------------------------------

    def _call(self, action: str, body: bytes) -> etree._Element:
        """POST one SOAP request; the first element of the answer's env:Body. A SOAP fault from the
        registry is a registry failure (XDSRegistryError in the outcome of `register`)."""
        envelope = soap_request_envelope(action, body, to=self.url)
        status, content_type, data = self._post(envelope, action)
        root = self._parse_answer(content_type, data, status)
        env_body = root.find(_ENV + "Body")
        if root.tag != _ENV + "Envelope" or env_body is None:
            raise RegistryUnavailable(f"the registry answered HTTP {status} without a SOAP 1.2 envelope")
        first = next((c for c in env_body if isinstance(c.tag, str)), None)
        if first is None:
            raise RegistryUnavailable("the registry answered an empty SOAP Body")
        if first.tag == _ENV + "Fault":
            reason = " ".join(first.xpath("string(.//*[local-name()='Text'])").split())[:200]
            return ebrim.registry_response([RegistryError(E.XDSRegistryError, f"the registry answered a SOAP fault: {reason}")])
        return first

    def _post(self, envelope: bytes, action: str) -> tuple[int, str, bytes]:
        parts = urllib.parse.urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"registry URL must be http(s)://host[:port]/path, got {self.url!r}")
        path = parts.path or "/"
        if parts.query:
            path += "?" + parts.query
        if parts.scheme == "https":
            conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                parts.hostname, parts.port, timeout=self.timeout, context=self.ssl_context
            )
        else:
            conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        headers = {"Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'}
        try:
            conn.connect()
        except OSError as exc:
            conn.close()
            raise RegistryUnavailable(
                f"registry at {self.url} not reachable: {type(exc).__name__}: {exc}", delivered=False
            ) from exc
        try:
            conn.request("POST", path, body=envelope, headers=headers)
            response = conn.getresponse()
            data = response.read()
            return response.status, response.getheader("content-type") or "", data
        except (OSError, http.client.HTTPException, socket.timeout) as exc:
            raise RegistryUnavailable(f"registry at {self.url} not reachable: {type(exc).__name__}: {exc}") from exc
        finally:
            conn.close()

    def _parse_answer(self, content_type: str, data: bytes, status: int) -> etree._Element:
        if status in (502, 503, 504):
            # 503: the registry itself refused to work; 502/504: a proxy does not know what happened.
            raise RegistryUnavailable(f"the registry answered HTTP {status}", delivered=status != 503)
        if content_type.lower().startswith("multipart/related"):
            from soap.mtom import parse_mtom

            try:
                data = parse_mtom(content_type, [data]).root
            except Exception as exc:  # noqa: BLE001 - a broken answer: the registry did not answer
                raise RegistryUnavailable(f"unreadable MTOM answer from the registry: {exc}") from exc
        try:
            return parse_xml(data)
        except XmlInputError as exc:
            raise RegistryUnavailable(f"the registry answered HTTP {status} with no readable XML: {exc}") from exc


def _get_documents_by_unique_id(unique_id: str) -> bytes:
    q = etree.Element(_QUERY + "AdhocQueryRequest", nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM})
    etree.SubElement(q, _QUERY + "ResponseOption", returnComposedObjects="true", returnType="ObjectRef")
    aq = etree.SubElement(q, _RIM + "AdhocQuery", id=C.SQ_GET_DOCUMENTS)
    slot = etree.SubElement(aq, _RIM + "Slot", name="$XDSDocumentEntryUniqueId")
    vl = etree.SubElement(slot, _RIM + "ValueList")
    escaped = unique_id.replace("'", "''")
    etree.SubElement(vl, _RIM + "Value").text = f"('{escaped}')"
    return etree.tostring(q, encoding="UTF-8")
