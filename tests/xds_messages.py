"""XDS messages for wire tests: IHE's RegisterDocumentSet-b example completed the way a Document
Repository sends it (repositoryUniqueId, hash, size: ITI TF-3 Table 4.3.1-3), and small mutators."""

from __future__ import annotations

import uuid

from lxml import etree

from registry import constants as C
from support import need_shared

RIM = f"{{{C.NS_RIM}}}"
SELF5 = "SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"
OTHER = "OTHER-7^^^&1.3.6.1.4.1.21367.2005.3.7&ISO"
HASH = "e543712c0e10501972de13a5bfcbe826c49feb75"


def slot(name: str, *values: str) -> etree._Element:
    slot = etree.Element(RIM + "Slot", name=name)
    vl = etree.SubElement(slot, RIM + "ValueList")
    for v in values:
        etree.SubElement(vl, RIM + "Value").text = v
    return slot


def set_slot(obj: etree._Element, name: str, *values: str) -> None:
    for old in obj.findall(RIM + "Slot"):
        if old.get("name") == name:
            obj.remove(old)
    obj.insert(0, slot(name, *values))


def valid_submission(*, doc_uid: str | None = None, ss_uid: str | None = None, size: str = "36") -> etree._Element:
    """The IHE example with fresh uniqueIds, completed by the repository's three slots."""
    path = need_shared("samples", "iti42", "ihe__RegisterDocumentSet-bRequest.xml")
    root = etree.parse(str(path)).getroot()
    doc = root.find(f".//{RIM}ExtrinsicObject")
    set_slot(doc, "repositoryUniqueId", "1.3.6.1.4.1.21367.2010.1.2.1125")
    set_slot(doc, "hash", HASH)
    set_slot(doc, "size", size)
    set_unique_id(root, "doc", doc_uid or f"2.25.{uuid.uuid4().int}")
    set_unique_id(root, "ss", ss_uid or f"2.25.{uuid.uuid4().int}")
    return root


def set_unique_id(root, which: str, value: str) -> None:
    scheme = C.DE_UNIQUE_ID if which == "doc" else C.SS_UNIQUE_ID
    for ei in root.iter(RIM + "ExternalIdentifier"):
        if ei.get("identificationScheme") == scheme:
            ei.set("value", value)


def document(root) -> etree._Element:
    return root.find(f".//{RIM}ExtrinsicObject")


def add_association(root, atype: str, source: str, target: str) -> None:
    ol = root.find(RIM + "RegistryObjectList")
    etree.SubElement(ol, RIM + "Association", id=f"assoc-{uuid.uuid4().hex[:8]}",
                     associationType=atype, sourceObject=source, targetObject=target)
