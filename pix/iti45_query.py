"""ITI-45 PIXV3 Query (ITI TF-2b §3.45) — the PIX Manager's side, Twisted-free.

PRPA_IN201309UV02 → `CrossReferences.query` → PRPA_IN201310UV02, with the cases of
ITI TF-2b §3.45.4.2.3:

- the identifier is known and has identifiers in the wanted domains: AA, queryResponseCode OK,
  one registrationEvent with them (never the queried identifier itself);
- known, but no identifier in the wanted domains: AA, NF, no registrationEvent;
- the identifier's domain is not recognised, or the identifier is not known in a recognised
  domain: AE, AE, no registrationEvent, one acknowledgementDetail typeCode E, code 204 (Unknown
  Key Identifier), location the XPath of patientIdentifier/value;
- a dataSource domain is not recognised: AE, AE, one such detail *for each* unrecognised
  domain, location the XPath of that dataSource's value (with its repetition number).

In every case the query's queryByParameter is echoed. A malformed query is AE / QE (query
parameter error) with the detail of what is missing; a store failure AR / AE with detail 207.
"""

from __future__ import annotations

import logging

import attrs
from lxml import etree

from pix import hl7v3 as V
from pix.xref import CrossReferences, Identifier, PixError, UnknownDomain, UnknownIdentifier
from registry.errors import InfrastructureError

log = logging.getLogger("carnet.pix")

TRANSACTION = "ITI-45"


@attrs.frozen(eq=False)
class QueryOutcome:
    response: etree._Element
    type_code: str
    query_response_code: str
    identifiers: tuple[Identifier, ...] = ()
    details: tuple[V.AckDetail, ...] = ()
    query: V.PixQuery | None = None


INTERNAL_ERROR = V.AckDetail(V.APPLICATION_INTERNAL_ERROR, "the PIX Manager could not run the query; retry later")


def _unknown_key(text: str, where: str) -> V.AckDetail:
    return V.AckDetail(V.UNKNOWN_KEY_IDENTIFIER, text, where)


def domain_details(query: V.PixQuery, known: frozenset[str]) -> list[V.AckDetail]:
    """§3.45.4.2.3 cases 4 and 5: one 204 detail for the patient identifier's unrecognised
    domain, and one per unrecognised dataSource domain."""
    details = []
    pid = query.patient_identifier
    if pid.authority not in known:
        details.append(
            _unknown_key(
                f"assigning authority {pid.authority} of the patient identifier is not a domain of this PIX Manager",
                V.location("patient_identifier", V.QUERY),
            )
        )
    positions = V.data_source_positions(query)
    for domain in dict.fromkeys(query.data_sources):
        if domain not in known:
            details.append(
                _unknown_key(
                    f"data source {domain} is not a domain of this PIX Manager",
                    V.location("data_source", V.QUERY, positions.get(domain, 1)),
                )
            )
    return details


def pix_query(body: etree._Element, xref: CrossReferences, responder: V.Responder) -> QueryOutcome:
    """Handle one ITI-45 query (the SOAP Body's element). Raises `hl7v3.WrongInteraction` when
    the body is not a PRPA_IN201309UV02."""
    try:
        query = V.parse_query(body)
    except V.Hl7v3MessageError as exc:
        header = V.parse_header(body)
        detail = V.AckDetail(exc.hl7_code, str(exc), exc.location)
        response = V.build_query_response(
            None, header, type_code=V.AE, query_response_code=V.QE, details=[detail], responder=responder
        )
        return QueryOutcome(response, V.AE, V.QE, (), (detail,))

    def answer(type_code: str, code: str, identifiers=(), details=()) -> QueryOutcome:
        response = V.build_query_response(
            query,
            query.header,
            type_code=type_code,
            query_response_code=code,
            identifiers=identifiers,
            details=details,
            responder=responder,
        )
        return QueryOutcome(response, type_code, code, tuple(identifiers), tuple(details), query)

    try:
        details = domain_details(query, xref.known_domains())
        if details:
            return answer(V.AE, V.AE, details=details)
        identifiers = xref.query(query.patient_identifier, query.data_sources)
    except UnknownIdentifier as exc:  # §3.45.4.2.3 case 3
        return answer(V.AE, V.AE, details=[_unknown_key(str(exc), V.location("patient_identifier", V.QUERY))])
    except UnknownDomain as exc:  # the store knows fewer domains than it said
        where = (
            V.location("data_source", V.QUERY)
            if exc.location == "QPD-4"
            else V.location("patient_identifier", V.QUERY)
        )
        return answer(V.AE, V.AE, details=[_unknown_key(str(exc), where)])
    except PixError as exc:
        return answer(V.AE, V.QE, details=[V.AckDetail(exc.hl7_code, str(exc), V.location("patient_identifier", V.QUERY))])
    except InfrastructureError as exc:
        log.error("ITI-45: store failure: %s", exc)
        return answer(V.AR, V.AE, details=[INTERNAL_ERROR])
    if not identifiers:
        return answer(V.AA, V.NF)
    return answer(V.AA, V.OK, identifiers)
