"""The DICOM audit message parser (what the Audit Record Repository stores): other nodes' samples,
the RFC 3881 forms, garbage, and round trips of our own messages."""

from __future__ import annotations

import string
from datetime import datetime, timedelta, timezone
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from atna.dicom import (
    ActiveParticipant,
    AuditEvent,
    AuditMessageError,
    AuditSource,
    Code,
    ParticipantObject,
    audit_message,
    audit_message_element,
    parse_audit_message,
)
from atna.events import build_events
from atna_events.test_events import CASES, NODE, NOW
from atna_events.validation import dicom_schema
from lxml import etree
from support import need_shared

TIMESTAMP = b"2026-11-23T10:15:30.250+01:00"


def _samples() -> list[Path]:
    folder = need_shared("samples", "atna")
    return sorted(folder.glob("*.xml"))


def _sample_bytes(path: Path) -> bytes:
    """samples/README.md: WUSTL files: a comment line before the XML declaration, ${timeStamp} to fill."""
    return path.read_bytes().replace(b"${timeStamp}", TIMESTAMP)


def test_every_sample_parses() -> None:
    paths = _samples()
    assert len(paths) >= 20
    for path in paths:
        event = parse_audit_message(_sample_bytes(path))
        assert event.event_id.code_system_name == "DCM", path.name
        assert event.participants and event.source.audit_source_id, path.name
        if path.name.startswith("wustl__"):
            # wustl__ITI-43_110106.dcm.xml: transaction and EventID in the name
            transaction, event_id = path.name[len("wustl__"):].split(".")[0].split("_")
            assert event.event_id.code == event_id, path.name
            assert [c.code for c in event.event_type_codes] == [transaction.replace("-0", "-")], path.name
            assert event.date_time == datetime(2026, 11, 23, 10, 15, 30, 250000, tzinfo=timezone(timedelta(hours=1)))


def test_wustl_iti43_sample_field_by_field() -> None:
    event = parse_audit_message(_sample_bytes(need_shared("samples", "atna", "wustl__ITI-43_110106.dcm.xml")))
    assert (event.action, event.outcome) == ("R", 0)
    assert event.event_id == Code("110106", "DCM", "Export")
    assert event.event_type_codes == (Code("ITI-43", "IHE Transactions", "Retrieve Document Set"),)
    source = event.participant_with_role("110153")
    assert source == ActiveParticipant(
        user_id="http://ihexds.nist.gov:9080/tf6/services/xcarepository", user_is_requestor=False,
        alternative_user_id="4056", network_access_point_id="ihexds.nist.gov", network_access_point_type_code="1",
        role_id_codes=(Code("110153", "DCM", "Source"),),
    )
    # RFC 3881 form kept: AuditSourceIdentification@code="1"
    assert event.source == AuditSource("ApixioAudit20101214a", None, (Code("1"),))
    (patient,) = event.objects_with("1", "1")
    assert patient.object_id == "5541138b47a445a^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"
    documents = event.objects_with("2", "3")
    assert [d.object_id for d in documents] == [
        "2009.9.1.2489", "2009.9.1.2491", "2009.9.1.2485", "2009.9.1.2486", "2009.9.1.2482", "2009.9.1.2480"]
    assert documents[0].detail("Repository Unique Id") == b"1.19.6.24.109.42.1.5"
    assert documents[0].detail("ihe:homeCommunityID") == b"urn:oid:1.19.6.24.109.42.1.3"


def test_ipf_pix_query_sample_query_and_detail() -> None:
    event = parse_audit_message(need_shared("samples", "atna", "ipf__pixquery.xml").read_bytes())
    (query,) = event.objects_with("2", "24")
    assert query.id_type_code.code == "ITI-9"
    assert query.query.startswith(b"MSH|^~\\&|MESA_PIX_CLIENT|")
    assert query.detail("MSH-10") == b"10501108"
    assert event.source.type_codes == (Code("9", "DCM", "Other"),)
    assert event.date_time == datetime(2020, 3, 19, 12, 34, 6, 367000, tzinfo=timezone.utc)


def test_rfc3881_attribute_forms_namespace_and_bom() -> None:
    message = (
        b"\xef\xbb\xbf<?xml version='1.0'?>\n"
        b'<a:AuditMessage xmlns:a="urn:example:audit">'
        b'<a:EventIdentification EventActionCode="E" EventDateTime="2015-03-05T12:52:31.3569999+02:00"'
        b' EventOutcomeIndicator="0"><a:EventID code="110112" displayName="Query" codeSystem="DCM"/>'
        b'<a:EventTypeCode code="ITI-9" codeSystemName="IHE Transactions" displayName="PIX Query"/>'
        b'</a:EventIdentification>'
        b'<a:ActiveParticipant UserID="pix" UserIsRequestor="1"><a:RoleIDCode code="110153"/><a:Extra/></a:ActiveParticipant>'
        b'<a:AuditSourceIdentification AuditSourceID="openhim" code="4"/>'
        b'<a:ParticipantObjectIdentification ParticipantObjectID="x" ParticipantObjectTypeCode="2">'
        b'<a:ParticipantObjectIDTypeCode code="ITI-9"/><a:ParticipantObjectQuery>not base64!</a:ParticipantObjectQuery>'
        b'<a:ParticipantObjectDetail type="MSH-10" value="plain text"/></a:ParticipantObjectIdentification>'
        b"</a:AuditMessage>"
    )
    event = parse_audit_message(message)
    assert event.event_id == Code("110112", "DCM", None, "Query")
    assert event.date_time == datetime(2015, 3, 5, 12, 52, 31, 356999, tzinfo=timezone(timedelta(hours=2)))
    assert event.participants[0].user_is_requestor is True
    assert event.participants[0].role_id_codes == (Code("110153"),)
    assert event.source.type_codes == (Code("4"),)
    (obj,) = event.objects
    assert (obj.query, obj.detail("MSH-10")) == (b"not base64!", b"plain text")


GARBAGE = {
    "empty": b"",
    "not xml": b"hello",
    "truncated": b"<AuditMessage><EventIdentification",
    "other root": b"<Envelope/>",
    "doctype": b'<!DOCTYPE AuditMessage [<!ENTITY x "y">]><AuditMessage/>',
    "no event identification": b"<AuditMessage><AuditSourceIdentification AuditSourceID='a'/></AuditMessage>",
    "no event id": b"<AuditMessage><EventIdentification EventDateTime='2020-01-01T00:00:00Z' EventOutcomeIndicator='0'/>"
                   b"<AuditSourceIdentification AuditSourceID='a'/></AuditMessage>",
    "bad date": b"<AuditMessage><EventIdentification EventDateTime='yesterday' EventOutcomeIndicator='0'>"
                b"<EventID csd-code='1'/></EventIdentification><AuditSourceIdentification AuditSourceID='a'/></AuditMessage>",
    "bad outcome": b"<AuditMessage><EventIdentification EventDateTime='2020-01-01T00:00:00Z' EventOutcomeIndicator='ok'>"
                   b"<EventID csd-code='1'/></EventIdentification><AuditSourceIdentification AuditSourceID='a'/></AuditMessage>",
    "no audit source": b"<AuditMessage><EventIdentification EventDateTime='2020-01-01T00:00:00Z' EventOutcomeIndicator='0'>"
                       b"<EventID csd-code='1'/></EventIdentification></AuditMessage>",
    "code without csd-code": b"<AuditMessage><EventIdentification EventDateTime='2020-01-01T00:00:00Z' EventOutcomeIndicator='0'>"
                             b"<EventID codeSystemName='DCM'/></EventIdentification><AuditSourceIdentification AuditSourceID='a'/></AuditMessage>",
    "comment then garbage": b"<!-- x -->\n<?xml version='1.0'?><AuditMessage>",
}


@pytest.mark.parametrize("data", GARBAGE.values(), ids=GARBAGE.keys())
def test_garbage_is_a_typed_error(data: bytes) -> None:
    with pytest.raises(AuditMessageError):
        parse_audit_message(data)


def test_size_cap() -> None:
    own = build_events(CASES[0].record, NODE, NOW)[0]
    with pytest.raises(AuditMessageError, match="exceeds"):
        parse_audit_message(own, max_bytes=100)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_own_messages_round_trip(case) -> None:
    for message in build_events(case.record, NODE, NOW):
        event = parse_audit_message(message)
        assert audit_message(event) == message
        assert event.date_time == NOW


# --- property: any AuditEvent the model can hold survives writing and reading ---------------------

_text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc", "Cn")), max_size=20)
_token = st.text(string.ascii_letters + string.digits + ".-:^&|", min_size=1, max_size=12)
_opt = lambda s: st.none() | s  # noqa: E731
_offsets = st.integers(-14 * 60, 14 * 60).map(lambda m: timezone(timedelta(minutes=m)))


def _events(code: st.SearchStrategy[Code]) -> st.SearchStrategy[AuditEvent]:
    participant = st.builds(
        ActiveParticipant, _text, st.booleans(), _opt(_text), _opt(_text), _opt(_token),
        _opt(st.sampled_from("12345")), st.lists(code, max_size=2).map(tuple),
    )
    obj = st.builds(
        ParticipantObject, code, _opt(_token), _opt(st.sampled_from("1234")), _opt(st.integers(1, 26).map(str)),
        _opt(st.integers(1, 15).map(str)), _opt(_token), st.none(), _opt(st.binary(max_size=40)),
        st.lists(st.tuples(_token, st.binary(max_size=20)), max_size=3).map(tuple),
    ) | st.builds(ParticipantObject, code, _opt(_token), name=_text)
    return st.builds(
        AuditEvent,
        event_id=code,
        date_time=st.datetimes(min_value=datetime(1000, 1, 1), timezones=_offsets),
        outcome=st.sampled_from([0, 4, 8, 12]),
        source=st.builds(AuditSource, _token, _opt(_token), st.lists(_any_code, max_size=2).map(tuple)),
        action=_opt(st.sampled_from("CRUDE")),
        event_type_codes=st.lists(code, max_size=2).map(tuple),
        outcome_description=_opt(_text),
        purposes_of_use=st.lists(code, max_size=2).map(tuple),
        participants=st.lists(participant, min_size=1, max_size=3).map(tuple),
        objects=st.lists(obj, max_size=3).map(tuple),
    )


_any_code = st.builds(Code, _token, _opt(_text), _opt(_text), _opt(_text))
# dicom2017c.xsd requires codeSystemName and originalText on every coded value but AuditSourceTypeCode
_full_code = st.builds(Code, _token, _text, _text, _opt(_text))
_event = _events(_any_code)


@settings(max_examples=150)
@given(_event)
def test_round_trip_property(event: AuditEvent) -> None:
    assert parse_audit_message(audit_message(event)) == event


# XML's specials and white space often, any other character XML can carry now and then
_xmlish = st.text(
    st.sampled_from('&<>"\'\t\n\r ab') | st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=12)


def _lxml_message(event: AuditEvent) -> bytes:
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + etree.tostring(audit_message_element(event), encoding="UTF-8")


@settings(max_examples=300)
@given(_events(st.builds(Code, _xmlish, _opt(_xmlish), _opt(_xmlish), _opt(_xmlish))), _xmlish)
def test_the_text_writer_writes_what_lxml_writes(event: AuditEvent, text: str) -> None:
    """`audit_message` writes text, not an element tree: byte for byte lxml's serialization of
    `audit_message_element`, and the same refusal of what XML cannot carry."""
    event = attrs.evolve(event, outcome_description=text, source=attrs.evolve(event.source, audit_source_id=text or "s"))
    try:
        expected = _lxml_message(event)
    except ValueError:  # a noncharacter (Cn) lxml refuses
        with pytest.raises(ValueError):
            audit_message(event)
        return
    assert audit_message(event) == expected


@pytest.mark.parametrize("bad", ["\x00", "a\x01b", "\x1f", "\ufffe", "\uffff"])
def test_the_text_writer_refuses_what_xml_cannot_carry_as_lxml_does(bad: str) -> None:
    event = AuditEvent(Code("110112", "DCM", "Query"), datetime(2026, 11, 23, tzinfo=timezone.utc), 0,
                       AuditSource("carnet"), outcome_description=bad)
    with pytest.raises(ValueError):
        _lxml_message(event)
    with pytest.raises(ValueError):
        audit_message(event)


@settings(max_examples=60)
@given(_events(_full_code))
def test_written_messages_follow_the_dicom_schema(event: AuditEvent) -> None:
    """Element order and attribute names match PS3.15 (dicom2017c.xsd) for any event whose coded values
    carry the codeSystemName and originalText that schema requires."""
    doc = etree.fromstring(audit_message(event))
    schema = dicom_schema()
    assert schema.validate(doc), schema.error_log


@settings(max_examples=200)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_escape_as_another_exception(data: bytes) -> None:
    try:
        parse_audit_message(data)
    except AuditMessageError:
        pass
