"""The ARR's HTTP side (twisted.web edge): ITI-81 at `/atna/AuditEvent`, history at `/atna/history/`.

- `AuditEventResource`: `GET …/AuditEvent?<search>` → FHIR R4 Bundle (searchset) of AuditEvent,
  `application/fhir+json` (IHE ITI RESTful ATNA, Retrieve ATNA Audit Event [ITI-81]
  §3.81.4.1–2); `GET …/AuditEvent/<id>` → one AuditEvent (FHIR read). Search parameters and their
  semantics: `atna.arr.query`; the DICOM → FHIR mapping: `atna.arr.fhir`. A refused search is
  HTTP 400 with an OperationOutcome (FHIR R4 §3.1.1.4 "search": unknown parameters may be refused
  under `handling=strict`; we always are strict), an infrastructure failure HTTP 500 with one.
- `HistoryResource`: `GET …/history/<patient>?_count=&_offset=` → JSON (`atna.arr.history`):
  the patient's access history, newest first, paged.

Database work and the parsing of stored messages run on the thread pool (`deferToThreadPool`);
the reactor is passed in. No access control here: the lead mounts these behind whatever
authentication the site applies (node authentication, ITI-19).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Callable
from urllib.parse import quote, urlencode

from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from atna.arr.fhir import FHIR_JSON, audit_event_resource, operation_outcome, searchset
from atna.arr.history import history_entry
from atna.arr.query import MAX_COUNT, SearchParameterError, _number, parse_search, patient_ref
from atna.arr.records import MalformedAudit, read_audit
from atna.arr.store import ArrStore, AuditRow

log = logging.getLogger("carnet.atna.arr")

HISTORY_DEFAULT_COUNT = 50
JSON = "application/json; charset=utf-8"


def _params(request) -> list[tuple[str, str]]:
    out = []
    for key, values in request.args.items():
        try:
            name = key.decode("utf-8")
            out += [(name, v.decode("utf-8")) for v in values]
        except UnicodeDecodeError:
            raise SearchParameterError("query parameters must be UTF-8") from None
    return out


def _grouped(pairs: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for k, v in pairs:
        grouped.setdefault(k, []).append(v)
    return grouped


def _events(rows: list[AuditRow]):
    """(row, parsed event) of stored rows; a stored message that no longer parses is logged, skipped."""
    for row in rows:
        try:
            _, event = read_audit(row.raw)
        except MalformedAudit as exc:
            log.error("stored audit record %s cannot be read: %s", row.id, exc)
            continue
        yield row, event


class _ThreadedJson(Resource):
    """Runs `work()` on the thread pool and writes its (status, content type, body) answer."""

    isLeaf = True

    def __init__(self, store: ArrStore, *, reactor: Any, threadpool: Any, base_url: str | None = None) -> None:
        super().__init__()
        self.store = store
        self.reactor = reactor
        self.threadpool = threadpool
        self.base_url = base_url.rstrip("/") if base_url else None

    def _base(self, request) -> str:
        return self.base_url or request.prePathURL().decode("utf-8", "replace").rstrip("/")

    def _answer(self, request, status: int, content_type: str, document: Any) -> None:
        body = json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", content_type.encode("ascii"))
        request.setHeader(b"Content-Length", str(len(body)).encode("ascii"))
        request.write(body)
        request.finish()

    def _run(self, request, work: Callable[[], tuple[int, str, Any]], error_type: str) -> Any:
        gone: list[bool] = []
        request.notifyFinish().addErrback(lambda _f: gone.append(True))

        def done(answer: tuple[int, str, Any]) -> None:
            if not gone:
                self._answer(request, *answer)

        def failed(failure) -> None:
            log.error("ARR request failed: %s", failure.getTraceback())
            if not gone:
                self._answer(request, 500, error_type, operation_outcome("internal error", code="exception"))

        d = deferToThreadPool(self.reactor, self.threadpool, work)
        d.addCallbacks(done, failed)
        return NOT_DONE_YET


class AuditEventResource(_ThreadedJson):
    """`/atna/AuditEvent`: ITI-81 search (FHIR R4 searchset Bundle) and read."""

    def render_GET(self, request) -> Any:
        base = self._base(request)
        path = [p.decode("utf-8", "replace") for p in request.postpath if p]
        if path:
            if len(path) != 1:
                self._answer(request, 404, FHIR_JSON, operation_outcome("no such resource", code="not-found"))
                return NOT_DONE_YET
            return self._run(request, lambda: self._read(path[0]), FHIR_JSON)
        try:
            pairs = _params(request)
            query = parse_search(_grouped(pairs))
        except SearchParameterError as exc:
            self._answer(request, 400, FHIR_JSON, operation_outcome(str(exc)))
            return NOT_DONE_YET

        def work() -> tuple[int, str, Any]:
            rows, more = self.store.search(query)
            resources = [audit_event_resource(row.id, event) for row, event in _events(rows)]
            bundle = searchset(
                resources, base_url=base, params=pairs, count=query.count, offset=query.offset, more=more
            )
            return 200, FHIR_JSON, bundle

        return self._run(request, work, FHIR_JSON)

    def _read(self, record_id: str) -> tuple[int, str, Any]:
        row = self.store.get(record_id)
        events = list(_events([row])) if row else []
        if not events:
            return 404, FHIR_JSON, operation_outcome(f"AuditEvent/{record_id} is not known", code="not-found")
        return 200, FHIR_JSON, audit_event_resource(row.id, events[0][1])


class HistoryResource(_ThreadedJson):
    """`/atna/history/<patient>`: the patient's access history (JSON), newest first, paged by
    `_count` (default 50, at most 1000) and `_offset`. `<patient>` is a CX
    (`value^^^&oid&ISO`, URL-encoded), `system|value`, or a bare value (any authority)."""

    def render_GET(self, request) -> Any:
        segments = [p.decode("utf-8", "replace") for p in request.postpath]
        text = "/".join(segments).strip("/")
        try:
            if not text:
                raise SearchParameterError("the patient is missing: GET /atna/history/<patient id>")
            patient = patient_ref(text)
            grouped = _grouped(_params(request))
            unknown = sorted(set(grouped) - {"_count", "_offset"})
            if unknown:
                raise SearchParameterError(f"unknown parameter(s): {', '.join(unknown)}")
            count = _number(grouped, "_count", HISTORY_DEFAULT_COUNT, 1, MAX_COUNT)
            offset = _number(grouped, "_offset", 0, 0, None)
        except SearchParameterError as exc:
            self._answer(request, 400, JSON, {"error": str(exc)})
            return NOT_DONE_YET
        base = self._base(request) + "/" + quote(text, safe="")

        def work() -> tuple[int, str, Any]:
            rows, more = self.store.history(patient, count=count, offset=offset)
            entries = [history_entry(row.id, event) for row, event in _events(rows)]
            links = {"self": f"{base}?{urlencode({'_count': count, '_offset': offset})}"}
            if more:
                links["next"] = f"{base}?{urlencode({'_count': count, '_offset': offset + count})}"
            if offset:
                links["previous"] = f"{base}?{urlencode({'_count': count, '_offset': max(0, offset - count)})}"
            return 200, JSON, {
                "patient": {"value": patient.value, "system": patient.system},
                "entries": entries,
                "links": links,
            }

        return self._run(request, work, JSON)


def atna_resource(store: ArrStore, *, reactor: Any, threadpool: Any, base_url: str | None = None) -> Resource:
    """The `/atna` subtree: `AuditEvent` (ITI-81) and `history/`. `base_url` is the public URL of
    `/atna` (for Bundle links); without it, links use the URL the client called."""
    atna = Resource()
    base = base_url.rstrip("/") if base_url else None
    atna.putChild(
        b"AuditEvent",
        AuditEventResource(
            store, reactor=reactor, threadpool=threadpool, base_url=f"{base}/AuditEvent" if base else None
        ),
    )
    atna.putChild(
        b"history",
        HistoryResource(store, reactor=reactor, threadpool=threadpool, base_url=f"{base}/history" if base else None),
    )
    return atna


__all__ = ["AuditEventResource", "HistoryResource", "atna_resource"]
