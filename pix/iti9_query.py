"""ITI-9 PIX Query (ITI TF-2a §3.9), HL7 v2.5: QBP^Q23 → `CrossReferences.query` → RSP^K23.

Request (§3.9.4.1.2): QPD-1 message query name (IHE PIX Query), QPD-2 query tag, QPD-3 the person
identifier (CX: value and assigning authority — namespace and/or OID), QPD-4 What Domains Returned
(repeating CX with only CX.4). RCP is read by nobody here (immediate mode only).

Response (§3.9.4.2.2.6), MSH-9 RSP^K23^RSP_K23, segments MSH, MSA, [ERR], QAK, QPD (echoed), [PID]:
- case 1, identifiers found: MSA-1 AA, QAK-2 OK, one PID whose PID-3 repetitions are the other
  identifiers of the person in the requested domains (not the queried identifier itself), PID-5
  the empty name with name type S (`~^^^^^^S`, §3.9.4.2.2.6: no demographics are returned);
- case 2, identifier known, no identifier in the requested domains: AA, NF, no PID;
- case 3, QPD-3's identifier or its domain not recognised: AE, QAK-2 AE, ERR-2 QPD^1^3^1^1
  (unknown identifier) or QPD^1^3^1^4 (unknown assigning authority), ERR-3 204;
- case 4, a domain of QPD-4 not recognised: AE, QAK-2 AE, ERR-2 QPD^1^4^n for each unrecognised
  repetition n, ERR-3 204.
A QBP without QPD is rejected (AR, ERR 100); a QPD-3 without CX.1 is AE with ERR 101.
"""

from __future__ import annotations

from pix import er7
from pix.xref import CrossReferences, Identifier, PixError, UnknownDomain, UnknownIdentifier

RSP_K23 = "RSP^K23^RSP_K23"
EMPTY_NAME_TYPE_S = "~^^^^^^S"  # PID-5 as IHE's examples give it (first repetition empty)


def _response(msg: er7.Er7Message, writer: er7.Er7Writer, ack_code: str, qak_status: str, *,
              errors: list[tuple[str, list[str], str]] = (), pid: str | None = None,
              responder: er7.ResponderIdentity) -> bytes:
    header = msg.header
    qpd = msg.first("QPD")
    message_type = writer.component.join(("RSP", "K23", "RSP_K23"))
    segments = [er7.response_header(header, writer, message_type, responder=responder),
                er7.msa(writer, ack_code, header, errors[0][2] if errors else "")]
    for hl7_code, locations, text in errors:
        segments.append(er7.err(writer, hl7_code, locations=locations, text=text, version=header.version))
    if qpd is not None:
        query_tag = msg.raw_field(qpd, 2)
        segments.append(writer.segment("QAK", query_tag, qak_status))
        segments.append(str(qpd))  # QPD echoed as received (same delimiters)
    if pid is not None:
        segments.append(pid)
    return er7.encode(segments, msg.codec)


def handle(msg: er7.Er7Message, xref: CrossReferences, authorities: er7.AuthorityTable, *,
           responder: er7.ResponderIdentity = er7.ResponderIdentity()) -> bytes:
    """One QBP^Q23. Domain errors are answered here; InfrastructureError and bugs propagate."""
    writer = er7.Er7Writer(msg.header.delimiters)

    def fail(hl7_code: str, locations: list[str], text: str, ack_code: str = "AE") -> bytes:
        return _response(msg, writer, ack_code, "AE", errors=[(hl7_code, locations, text)], responder=responder)

    qpd = msg.first("QPD")
    if qpd is None:
        return fail("100", ["QPD"], "QBP^Q23 without a QPD segment", "AR")

    known = xref.known_domains()
    reps = msg.repetitions(qpd, 3)
    rep = reps[0] if reps else []
    value = er7.component_of(rep, 1).strip()
    if not value:
        return fail("101", ["QPD^1^3^1^1"], "QPD-3 carries no identifier (CX.1)")
    try:
        resolved = authorities.resolve(rep, source=msg.header.sending_application_name)
    except LookupError as exc:
        resolved = None
        authority_text = str(exc.args[0])
    else:
        authority_text = resolved[1] if resolved else ""
    if resolved is None or not resolved[1] or resolved[1] not in known:
        return fail("204", ["QPD^1^3^1^4"],
                    f"assigning authority {authority_text!r} of QPD-3 is not a known domain")
    _, oid, namespace, type_code = resolved

    domains: list[str] = []
    unknown_reps: list[str] = []
    for n, drep in enumerate(msg.repetitions(qpd, 4), start=1):
        try:
            d = authorities.resolve(drep, source="")
        except LookupError:
            unknown_reps.append(f"QPD^1^4^{n}")
            continue
        # a What Domains Returned repetition carries only CX.4 (value empty)
        if d is None or not d[1] or d[1] not in known:
            unknown_reps.append(f"QPD^1^4^{n}")
            continue
        domains.append(d[1])
    if unknown_reps:
        return fail("204", unknown_reps, "unknown domain(s) in QPD-4 (What Domains Returned)")

    queried = Identifier(value=value, authority=oid, namespace=namespace, type_code=type_code)
    try:
        found = xref.query(queried, tuple(dict.fromkeys(domains)))
    except UnknownIdentifier as exc:
        return fail("204", ["QPD^1^3^1^1"], str(exc))
    except UnknownDomain as exc:
        where = "QPD^1^4" if exc.location.startswith("QPD-4") else "QPD^1^3^1^4"
        return fail("204", [where], str(exc))
    except PixError as exc:
        return fail(exc.hl7_code, ["QPD^1^3"], str(exc))
    if not found:
        return _response(msg, writer, "AA", "NF", responder=responder)
    pid3 = writer.repetition.join(
        authorities.cx(writer, i.value, i.authority, i.namespace, i.type_code) for i in found
    )
    name = EMPTY_NAME_TYPE_S.replace("~", writer.repetition).replace("^", writer.component)
    pid = writer.segment("PID", "1", "", pid3, "", name)
    return _response(msg, writer, "AA", "OK", pid=pid, responder=responder)
