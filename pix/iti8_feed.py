"""ITI-8 Patient Identity Feed (ITI TF-2a §3.8), HL7 v2: ADT → `CrossReferences.feed` / `.merge` → ACK.

Accepted events (MSH-9.2): A01 admit, A04 register, A05 pre-admit, A08 update (create or update,
§3.8.4.1), A40 merge (§3.8.4.2: PID-3 surviving, MRG-1 subsumed), and the French PAM events that
carry the INS (CI-SIS PAM-FR 2.11): A28 add person, A31 update person. Z segments (ZBE, ZFA, ZFD,
ZFM ...) and any other segment are tolerated and ignored.

Reading PID (HL7 v2.5 §3.4.2): PID-3 repetitions (CX: CX.1 value, CX.4.1 namespace, CX.4.2 OID,
CX.5 type; an HL7 null `""` repetition is ignored — a feed never deletes an identifier), PID-5
name (the first repetition carrying a family name), PID-7 birth date, PID-8 sex, PID-11 birth
place (PAM-FR: address type BDL, XAD-9 = INSEE commune code) or PID-23, PID-32 identity
reliability codes (repeating: VALI, PROV, ...).

Acknowledgment (§3.8.4.1.3; HL7 v2.5 §2.9.2, original mode): MSH-9 ACK^<event>^ACK, MSA-2 = the
request's MSH-10; AA; AE + ERR for a domain error (PixError.hl7_code and its location); AR + ERR
for a message we do not process (no PID: 100; no usable identifier: 101). An infrastructure
failure is AE 207, never a domain code (DESIGN.md §3 rule 3) — the service maps it.
"""

from __future__ import annotations

import attrs

from pix import er7
from pix.xref import CrossReferences, Demographics, Identifier, InvalidIdentifier, PatientRecord, PixError, UnknownDomain, XrefChange

FEED_EVENTS = frozenset({"A01", "A04", "A05", "A08", "A28", "A31"})
MERGE_EVENTS = frozenset({"A40"})
EVENTS = FEED_EVENTS | MERGE_EVENTS


class FeedRejected(Exception):
    """The message is not one we process (→ AR with ERR)."""

    def __init__(self, message: str, *, hl7_code: str, location: str = "") -> None:
        super().__init__(message)
        self.hl7_code = hl7_code
        self.location = location


@attrs.frozen
class FeedOutcome:
    """The ACK to send, and what changed (None when nothing was stored)."""

    response: bytes
    change: XrefChange | None = None


def _names_authority(rep) -> bool:
    return bool(er7.component_of(rep, 4, 1).strip() or er7.component_of(rep, 4, 2).strip())


def identifiers_of(msg: er7.Er7Message, segment, field: int, location: str,
                   authorities: er7.AuthorityTable, *, skip_bare: bool = False) -> tuple[Identifier, ...]:
    """The identifiers of a CX list field (PID-3, MRG-1). Raises PixError for one that names an
    unknown namespace (204), lacks CX.1 or CX.4 (101), or a domain the source may not feed (204).
    `skip_bare`: repetitions without CX.4 are ignored when another one names its authority."""
    source = msg.header.sending_application_name
    out: list[Identifier] = []
    reps = msg.repetitions(segment, field)
    if skip_bare and any(_names_authority(r) for r in reps):
        reps = [r for r in reps if _names_authority(r)]
    for rep in reps:
        try:
            resolved = authorities.resolve(rep, source=source)
        except LookupError as exc:
            raise UnknownDomain(
                f"assigning authority {exc.args[0]!r} (CX.4.1) could not be resolved to a known domain",
                location=location,
            ) from None
        if resolved is None:
            continue
        value, oid, namespace, type_code = resolved
        if not oid:
            raise InvalidIdentifier(
                f"identifier {value!r} has no assigning authority (CX.4)", location=location, hl7_code="101"
            )
        if not value:
            raise InvalidIdentifier(f"identifier of {oid} without CX.1", location=location, hl7_code="101")
        if not authorities.may_feed(oid, source):
            raise PixError(
                f"sending application {source!r} may not feed identifiers of domain {oid}",
                location=location,
                hl7_code="204",
            )
        out.append(Identifier(value=value, authority=oid, namespace=namespace, type_code=type_code))
    return tuple(out)


def demographics_of(msg: er7.Er7Message, pid) -> Demographics:
    family, given = "", ()
    for rep in msg.repetitions(pid, 5):
        fam = er7.component_of(rep, 1, 1)
        if fam:
            family = fam
            given = tuple(g for g in (er7.component_of(rep, 2), er7.component_of(rep, 3)) if g)
            break
    birth_place = ""
    for rep in msg.repetitions(pid, 11):
        if er7.component_of(rep, 7) == "BDL":  # PAM-FR: birth place address, XAD-9 INSEE code
            birth_place = er7.component_of(rep, 9)
            break
    if not birth_place:
        birth_place = msg.value(pid, 23)
    extra = {}
    for n in (6, 11, 13):
        raw = msg.raw_field(pid, n)
        if raw:
            extra[f"PID-{n}"] = raw
    return Demographics(
        family_name=family,
        given_names=given,
        birth_date=msg.value(pid, 7),
        sex=msg.value(pid, 8),
        birth_place=birth_place,
        extra=extra,
    )


def record_of(msg: er7.Er7Message, authorities: er7.AuthorityTable) -> PatientRecord:
    """The PatientRecord a feed carries (raises FeedRejected without PID or identifiers)."""
    pid = msg.first("PID")
    if pid is None:
        raise FeedRejected("the message has no PID segment", hl7_code="100", location="PID")
    identifiers = identifiers_of(msg, pid, 3, "PID-3", authorities)
    if not identifiers:
        raise FeedRejected("PID-3 carries no patient identifier", hl7_code="101", location="PID-3")
    reliability = tuple(
        code for code in (er7.component_of(rep, 1).strip() for rep in msg.repetitions(pid, 32)) if code
    )
    return PatientRecord(identifiers=identifiers, demographics=demographics_of(msg, pid),
                         identity_reliability=reliability)


def _merge_changes(changes: list[XrefChange]) -> XrefChange:
    if len(changes) == 1:
        return changes[0]
    return XrefChange(
        groups=tuple(g for c in changes for g in c.groups),
        registered=tuple(dict.fromkeys(p for c in changes for p in c.registered)),
        retired=tuple(dict.fromkeys(p for c in changes for p in c.retired)),
    )


@attrs.frozen
class FeedRequest:
    """What one ITI-8 message asks of the store: `record` (PID) and, for A40, the `subsumed`
    identifiers of MRG-1 (empty for a create/update)."""

    msg: er7.Er7Message
    record: PatientRecord
    subsumed: tuple[Identifier, ...] = ()

    @property
    def is_merge(self) -> bool:
        return self.msg.header.trigger_event in MERGE_EVENTS


def read(msg: er7.Er7Message, authorities: er7.AuthorityTable) -> FeedRequest:
    """The request an ITI-8 message (its event already known to be in EVENTS) carries; raises
    FeedRejected (→ AR) or PixError (→ AE)."""
    record = record_of(msg, authorities)
    if msg.header.trigger_event not in MERGE_EVENTS:
        return FeedRequest(msg, record)
    # ITI TF-2a §3.8.4.2: MRG-1 (Prior Patient Identifier List) names the subsumed id(s)
    mrg = msg.first("MRG")
    if mrg is None:
        raise FeedRejected("A40 without an MRG segment", hl7_code="100", location="MRG")
    # MRG-1 is a repeating list in v2.3.1: IPF's A40 sends `305010~7200117359^^^BBB&OID&ISO`;
    # a repetition without CX.4 next to qualified ones is ignored. Each one left is merged.
    subsumed = identifiers_of(msg, mrg, 1, "MRG-1", authorities, skip_bare=True)
    if not subsumed:
        raise FeedRejected("MRG-1 carries no identifier with its assigning authority",
                           hl7_code="101", location="MRG-1")
    return FeedRequest(msg, record, subsumed)


def outcome(msg: er7.Er7Message, result: XrefChange | Exception, *,
            responder: er7.ResponderIdentity = er7.ResponderIdentity()) -> FeedOutcome:
    """The acknowledgment of one ITI-8 message from what the store answered (or what reading
    it raised): XrefChange → AA; FeedRejected → AR; PixError → AE (§3.8.4.1.3). Any other
    exception (InfrastructureError, a bug) is raised again: the service answers it (207)."""
    header = msg.header

    def answer(code: str, hl7_code: str = "", location: str = "", text: str = "") -> bytes:
        return er7.ack(header, code, hl7_code=hl7_code, locations=[location] if location else [],
                       text=text, codec=msg.codec, responder=responder)

    if isinstance(result, FeedRejected):
        return FeedOutcome(answer("AR", result.hl7_code, result.location, str(result)))
    if isinstance(result, PixError):
        return FeedOutcome(answer("AE", result.hl7_code, result.location, str(result)))
    if isinstance(result, BaseException):
        raise result
    return FeedOutcome(answer("AA"), result)


def apply(request: FeedRequest, xref: CrossReferences) -> XrefChange:
    """Run one request on the store (feed, or each merge of an A40 in turn)."""
    if request.is_merge:
        return _merge_changes([xref.merge(request.record, s) for s in request.subsumed])
    return xref.feed(request.record)


def handle(msg: er7.Er7Message, xref: CrossReferences, authorities: er7.AuthorityTable, *,
           responder: er7.ResponderIdentity = er7.ResponderIdentity()) -> FeedOutcome:
    """One ITI-8 message (its event already known to be in EVENTS). PixError → AE; FeedRejected →
    AR. Other exceptions (InfrastructureError, bugs) propagate: the service answers them (207)."""
    try:
        result: XrefChange | Exception = apply(read(msg, authorities), xref)
    except (FeedRejected, PixError) as exc:
        result = exc
    return outcome(msg, result, responder=responder)


def handle_many(msgs: list[er7.Er7Message], xref: CrossReferences, authorities: er7.AuthorityTable, *,
                responder: er7.ResponderIdentity = er7.ResponderIdentity()) -> list[FeedOutcome | Exception]:
    """Several ITI-8 create/update messages (no merge) in order, stored with ONE
    `xref.feed_many` (one transaction; each message all or nothing). One FeedOutcome per
    message, or the exception to answer for it (InfrastructureError: 207). A store without
    `feed_many` is fed message by message."""
    out: list[FeedOutcome | Exception | None] = [None] * len(msgs)
    requests: list[tuple[int, FeedRequest]] = []
    for n, msg in enumerate(msgs):
        try:
            requests.append((n, read(msg, authorities)))
        except (FeedRejected, PixError) as exc:
            out[n] = outcome(msg, exc, responder=responder)
    feed_many = getattr(xref, "feed_many", None)
    if feed_many is not None and requests:
        results = feed_many([r.record for _, r in requests])
    else:
        results = []
        for _, r in requests:
            try:
                results.append(xref.feed(r.record))
            except Exception as exc:  # noqa: BLE001 - mapped below, per message
                results.append(exc)
    for (n, r), result in zip(requests, results):
        try:
            out[n] = outcome(r.msg, result, responder=responder)
        except Exception as exc:  # noqa: BLE001 - the service answers it
            out[n] = exc
    return out
