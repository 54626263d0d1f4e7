"""Helpers shared by tests (importable as `support`: tests/ is on pytest's pythonpath)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CARNET_SHARED", ROOT.parent / "shared"))
IN_CI = os.environ.get("CI", "").lower() == "true"
PG_URL = os.environ.get("CARNET_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def need_shared(*parts: str) -> Path:
    """Path inside ../shared; skip cleanly when absent, fail in CI."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        if IN_CI:
            pytest.fail(f"{p} is missing in CI")
        pytest.skip(f"{p} not available")
    return p


_SCHEMAS: dict[str, object] = {}


def xdsb_schema():
    """The official XDS.b schema (ebRS 3.0 + IHE), loaded once; skips without ../shared."""
    from lxml import etree

    if "xdsb" not in _SCHEMAS:
        path = need_shared("xsd", "IHE", "XDS.b_DocumentRepository.xsd")
        _SCHEMAS["xdsb"] = etree.XMLSchema(etree.parse(str(path)))
    return _SCHEMAS["xdsb"]


SOAP_NS = "http://www.w3.org/2003/05/soap-envelope"
WSA_NS = "http://www.w3.org/2005/08/addressing"


def soap_envelope(body: bytes, action: str, *, message_id: str | None = None, to: str = "http://localhost/") -> bytes:
    """A SOAP 1.2 request with WS-Addressing around `body` (an element's bytes, no declaration)."""
    import uuid

    message_id = message_id or f"urn:uuid:{uuid.uuid4()}"
    return (
        f'<s:Envelope xmlns:s="{SOAP_NS}" xmlns:a="{WSA_NS}"><s:Header>'
        f'<a:Action s:mustUnderstand="1">{action}</a:Action><a:MessageID>{message_id}</a:MessageID>'
        f'<a:ReplyTo><a:Address>http://www.w3.org/2005/08/addressing/anonymous</a:Address></a:ReplyTo>'
        f'<a:To s:mustUnderstand="1">{to}</a:To></s:Header><s:Body>'
    ).encode() + body + b"</s:Body></s:Envelope>"


def post_soap(url: str, envelope: bytes, *, content_type: str = "application/soap+xml; charset=UTF-8"):
    """POST a SOAP message; returns (HTTP status, content type, parsed envelope root)."""
    import urllib.error
    import urllib.request

    from lxml import etree

    req = urllib.request.Request(url, data=envelope, headers={"Content-Type": content_type}, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            status, ctype, data = resp.status, resp.headers.get("Content-Type", ""), resp.read()
    except urllib.error.HTTPError as err:
        status, ctype, data = err.code, err.headers.get("Content-Type", ""), err.read()
    return status, ctype, etree.fromstring(data)


def soap_body(envelope_root):
    """The first child element of env:Body."""
    body = envelope_root.find(f"{{{SOAP_NS}}}Body")
    return next(c for c in body if isinstance(c.tag, str))


def registry_error_codes(element) -> list[str]:
    rs = "urn:oasis:names:tc:ebxml-regrep:xsd:rs:3.0"
    return [e.get("errorCode") for e in element.iter(f"{{{rs}}}RegistryError")]
