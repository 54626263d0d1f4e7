"""Helpers for the ITI-18 tests: build AdhocQueryRequests, run them through the handler over a
real store, read the AdhocQueryResponse back."""

from __future__ import annotations

import functools
from typing import Iterable, Sequence

from lxml import etree

from registry import constants as C
from registry.ebrim import parse_adhoc_query_request
from registry.iti18_stored_query import StoredQueryConfig, execute
from registry.ports import AllowAllPolicy, TransactionContext
from registry.store import RegistryStore
from support import need_shared

Q = "{%s}" % C.NS_QUERY
R = "{%s}" % C.NS_RIM
RS = "{%s}" % C.NS_RS
CONTEXT = TransactionContext(transaction="ITI-18")


def q(text: str) -> str:
    """A quoted stored query string value."""
    return "'" + text.replace("'", "''") + "'"


def ql(*texts: str) -> str:
    """A quoted list value ('a','b')."""
    return "(" + ",".join(q(t) for t in texts) + ")"


def request_xml(
    query_id: str,
    params: Sequence[tuple[str, Sequence[str] | str]],
    return_type: str = "LeafClass",
    home: str | None = None,
) -> bytes:
    root = etree.Element(Q + "AdhocQueryRequest", nsmap={"query": C.NS_QUERY, "rim": C.NS_RIM})
    opt = etree.SubElement(root, Q + "ResponseOption")
    opt.set("returnComposedObjects", "true")
    opt.set("returnType", return_type)
    aq = etree.SubElement(root, R + "AdhocQuery")
    aq.set("id", query_id)
    if home:
        aq.set("home", home)
    for name, values in params:
        slot = etree.SubElement(aq, R + "Slot")
        slot.set("name", name)
        vl = etree.SubElement(slot, R + "ValueList")
        for v in [values] if isinstance(values, str) else values:
            etree.SubElement(vl, R + "Value").text = v
    return etree.tostring(root)


def run_bytes(engine, body: bytes, *, config: StoredQueryConfig | None = None, policy=None):
    request = parse_adhoc_query_request(etree.fromstring(body))
    return execute(
        request, RegistryStore(engine), policy=policy or AllowAllPolicy(), context=CONTEXT, config=config
    )


def run(engine, query_id, params, return_type="LeafClass", **kw) -> etree._Element:
    out = run_bytes(engine, request_xml(query_id, params, return_type, kw.pop("home", None)), **kw)
    return etree.fromstring(out.body)


def status(resp: etree._Element) -> str:
    return resp.get("status")


def error_codes(resp: etree._Element) -> list[str]:
    return [e.get("errorCode") for e in resp.iter(RS + "RegistryError")]


def objects(resp: etree._Element) -> list[etree._Element]:
    rol = resp.find(R + "RegistryObjectList")
    return [] if rol is None else list(rol)


def ids(resp: etree._Element) -> set[str]:
    return {o.get("id") for o in objects(resp)}


def ids_by_kind(resp: etree._Element) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for o in objects(resp):
        tag = etree.QName(o).localname
        if tag == "RegistryPackage":
            nodes = {c.get("classificationNode") for c in o.iter(R + "Classification")}
            tag = "SubmissionSet" if C.SS_CLASSIFICATION_NODE in nodes else "Folder"
        out.setdefault(tag, set()).add(o.get("id"))
    return out


def assert_success(resp: etree._Element) -> None:
    assert status(resp) == C.RESPONSE_SUCCESS, error_codes(resp)


@functools.lru_cache(maxsize=1)
def _schema() -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(need_shared("xsd", "IHE", "XDS.b_DocumentRepository.xsd"))))


def assert_valid(resp: etree._Element | bytes) -> None:
    el = etree.fromstring(resp) if isinstance(resp, bytes) else resp
    schema = _schema()
    assert schema.validate(el), schema.error_log


def names(tag: str, *names_: str) -> set[str]:
    from iti18.fixtures import ident

    return {ident(tag, n) for n in names_}


def all_ids(tag: str, names_: Iterable[str]) -> set[str]:
    return names(tag, *names_)
