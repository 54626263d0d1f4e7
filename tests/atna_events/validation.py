"""Schema and schematron checks for audit messages (the DICOM XSD and the WUSTL per-transaction schematron)."""

from __future__ import annotations

from pathlib import Path

from lxml import etree, isoschematron

from support import need_shared

_CACHE: dict[str, object] = {}

# The ITI-18 WUSTL schematron asserts count(A and B)=1: count() of a boolean is an XPath 1.0 type error
# (libxslt: "Invalid type"), so the rule can never run. Its evident intent, rewritten:
_ITI18_BROKEN = "count(ParticipantObjectDetail[@type='QueryEncoding'] and ParticipantObjectDetail[@value!=''])=1"
_ITI18_FIXED = "count(ParticipantObjectDetail[@type='QueryEncoding' and @value!=''])=1"


def dicom_schema() -> etree.XMLSchema:
    if "xsd" not in _CACHE:
        _CACHE["xsd"] = etree.XMLSchema(etree.parse(str(need_shared("xsd", "DICOM", "dicom2017c.xsd"))))
    return _CACHE["xsd"]  # type: ignore[return-value]


def schematron(relative: str) -> isoschematron.Schematron:
    """A WUSTL schematron (`ITI-18_Registry_Stored_Query/110112/mt02DG.sch`). 32 of them put @id on
    rule/assert, which lxml's ISO schema check refuses: they are compiled without that check."""
    if relative not in _CACHE:
        path: Path = need_shared("xsd", "atna-schematron", *relative.split("/"))
        doc = etree.parse(str(path))
        for assertion in doc.iter("{http://purl.oclc.org/dsdl/schematron}assert"):
            if assertion.get("test") == _ITI18_BROKEN:
                assertion.set("test", _ITI18_FIXED)
        try:
            _CACHE[relative] = isoschematron.Schematron(doc, store_report=True)
        except etree.SchematronParseError:
            _CACHE[relative] = isoschematron.Schematron(doc, store_report=True, validate_schema=False)
    return _CACHE[relative]  # type: ignore[return-value]


def failed_asserts(sch: isoschematron.Schematron, doc: etree._Element) -> list[str]:
    sch.validate(doc)
    report = sch.validation_report
    ns = {"svrl": "http://purl.oclc.org/dsdl/svrl"}
    return [
        " ".join(t.itertext()).strip() + f" [{f.get('test')}]"
        for f in report.iterfind(".//svrl:failed-assert", ns)
        for t in f.iterfind("svrl:text", ns)
    ]


def assert_valid(message: bytes, schematron_path: str | None) -> etree._Element:
    doc = etree.fromstring(message)
    schema = dicom_schema()
    assert schema.validate(doc), schema.error_log
    if schematron_path:
        failures = failed_asserts(schematron(schematron_path), doc)
        assert failures == [], failures
    return doc
