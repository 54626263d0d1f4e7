"""ebRIM 3.0 / ebRS 3.0 wire codec: lxml elements ⇄ `registry.model` (sans-I/O).

Parsing takes an element already produced by the hardened parser (`soap.xmlparse`) and returns
model objects or raises `XdsFailure(XDSRegistryMetadataError)` with a location. Serialising
writes children in the order of rim.xsd (ebRIM 3.0 §2 / rim.xsd `RegistryObjectType`):
Slot*, Name?, Description?, VersionInfo?, Classification*, ExternalIdentifier*, and then
ContentVersionInfo? for rim:ExtrinsicObject.

Decisions (documented here because the model is lossless only up to them):

* Top-level rim:Classification elements of a rim:RegistryObjectList (the IHE sample way of
  typing the SubmissionSet, ITI TF-3 §4.2.3.3.1 / §4.2.1.1) are folded into the
  `classifications` of the object they classify, after its nested ones. The model then says
  what an XDS consumer sees (a stored fragment carries the classification nested, which is what a
  LeafClass response must contain). Where the wire placement matters (a faithful write-back of a
  request) `parse_submit_objects_request_with_layout` also returns a `WireLayout` that records the
  document order of the RegistryObjectList's children, and
  `submit_objects_request_to_element(req, layout)` reproduces it. A top-level Classification
  whose classifiedObject is not an object of the same request cannot be represented: it is an
  XDSRegistryMetadataError.
* A rim:RegistryPackage is a SubmissionSet if classified by the SubmissionSet node
  (urn:uuid:a54d6aa5-…), a Folder if classified by the Folder node (urn:uuid:d9d542f3-…),
  ITI TF-3 §4.2.3.3 / §4.2.3.4; neither or both is an XDSRegistryMetadataError.
* An empty rim:Name / rim:Description (no LocalizedString) is the same InternationalString as an
  absent one and is not written back. `isOpaque="1"` is written back as "true". Attributes the
  model does not know are refused when unqualified (rim.xsd allows none) and ignored when in
  another namespace (xsi:schemaLocation and the like). Comments and processing instructions are
  ignored. Constructs XDS never uses and the model cannot hold (a RegistryObjectList inside a
  RegistryPackage, VersionInfo/Classification/ExternalIdentifier inside a Classification or an
  ExternalIdentifier, Slots on an ObjectRef) are refused rather than silently dropped.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from typing import Any

import attrs
from lxml import etree

from registry import constants as C
from registry import model as M
from registry.errors import RegistryError, XdsErrorCode, fail

__all__ = [
    "AdhocQueryRequest",
    "WireLayout",
    "parse_submit_objects_request",
    "parse_submit_objects_request_with_layout",
    "element_to_object",
    "parse_adhoc_query_request",
    "object_to_element",
    "object_to_bytes",
    "submit_objects_request_to_element",
    "submit_objects_request_to_bytes",
    "registry_response",
    "registry_response_bytes",
    "adhoc_query_response_bytes",
    "with_status",
    "set_slot",
    "replace_status_in_fragment",
]

_R = "{%s}" % C.NS_RIM
_RS = "{%s}" % C.NS_RS
_LCM = "{%s}" % C.NS_LCM
_Q = "{%s}" % C.NS_QUERY
_XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"

T_SLOT = _R + "Slot"
T_VALUE_LIST = _R + "ValueList"
T_VALUE = _R + "Value"
T_NAME = _R + "Name"
T_DESCRIPTION = _R + "Description"
T_LOCALIZED_STRING = _R + "LocalizedString"
T_VERSION_INFO = _R + "VersionInfo"
T_CONTENT_VERSION_INFO = _R + "ContentVersionInfo"
T_CLASSIFICATION = _R + "Classification"
T_EXTERNAL_IDENTIFIER = _R + "ExternalIdentifier"
T_EXTRINSIC_OBJECT = _R + "ExtrinsicObject"
T_REGISTRY_PACKAGE = _R + "RegistryPackage"
T_ASSOCIATION = _R + "Association"
T_OBJECT_REF = _R + "ObjectRef"
T_REGISTRY_OBJECT_LIST = _R + "RegistryObjectList"
T_ADHOC_QUERY = _R + "AdhocQuery"
T_SUBMIT_OBJECTS_REQUEST = _LCM + "SubmitObjectsRequest"
T_REQUEST_SLOT_LIST = _RS + "RequestSlotList"
T_ADHOC_QUERY_REQUEST = _Q + "AdhocQueryRequest"
T_RESPONSE_OPTION = _Q + "ResponseOption"

_RIM_NSMAP = {"rim": C.NS_RIM}
_RULE = "ebrim.structure"

# Attributes common to every rim:RegistryObjectType (rim.xsd IdentifiableType + RegistryObjectType).
_RO_ATTRS = frozenset({"id", "home", "lid", "objectType", "status"})


# ============================================================================================
# Parsing: wire → model
# ============================================================================================


def _localname(el: etree._Element) -> str:
    return etree.QName(el).localname


def _location(el: etree._Element) -> str:
    """`id` of the element, or `<nearest ancestor id>/<path>` (e.g. `Document01/Slot[2]/ValueList`)."""
    parts: list[str] = []
    e: etree._Element | None = el
    while e is not None:
        ident = e.get("id")
        if ident is not None and e.tag not in (T_SUBMIT_OBJECTS_REQUEST, T_ADHOC_QUERY_REQUEST):
            parts.append(ident.strip())
            break
        parent = e.getparent()
        name = _localname(e)
        if parent is not None:
            same = [c for c in parent if c.tag == e.tag]
            if len(same) > 1:
                name = f"{name}[{same.index(e) + 1}]"
        parts.append(name)
        e = parent
    return "/".join(reversed(parts))


def _metadata_error(message: str, el: etree._Element) -> Exception:
    return fail(XdsErrorCode.XDSRegistryMetadataError, message, _location(el), rule=_RULE)


def _is_blank(text: str | None) -> bool:
    return text is None or not text.strip()


# Set (per thread) while parsing a document already known to hold no text outside rim:Value
# (`_no_stray_text`): the per-element text checks below then have nothing to find.
_parsing = threading.local()

# Non-blank text outside rim:Value. XPath's normalize-space() strips only XML white space, a
# subset of what str.strip() strips, so when this finds nothing the checks find nothing either.
_STRAY_TEXT = etree.XPath(
    "boolean(descendant::text()[normalize-space()][not(parent::rim:Value)])",
    namespaces={"rim": C.NS_RIM},
)


def _no_stray_text(el: etree._Element) -> bool:
    return not _STRAY_TEXT(el)


def _element_children(el: etree._Element) -> list[etree._Element]:
    """Element children, skipping comments and PIs; refuses text content between them."""
    if getattr(_parsing, "text_checked", False):
        return list(el.iterchildren(etree.Element)) if len(el) else []
    if not _is_blank(el.text):
        raise _metadata_error(f"unexpected text content in {_localname(el)}", el)
    out = []
    for child in el:
        if not _is_blank(child.tail):
            raise _metadata_error(f"unexpected text content in {_localname(el)}", el)
        if isinstance(child.tag, str):
            out.append(child)
    return out


class _Seq:
    """An xsd:sequence as (tag, repeatable) pairs, with its tag → position index."""

    __slots__ = ("order", "index")

    def __init__(self, *order: tuple[str, bool]) -> None:
        self.order = order
        self.index = {tag: i for i, (tag, _) in enumerate(order)}

    def __add__(self, other: "_Seq") -> "_Seq":
        return _Seq(*self.order, *other.order)


def _sequence(el: etree._Element, seq: _Seq) -> list[etree._Element]:
    """Children of `el` checked against an xsd:sequence."""
    index, order = seq.index, seq.order
    pos = -1
    children = _element_children(el)
    for child in children:
        i = index.get(child.tag)
        if i is None:
            raise _metadata_error(
                f"unexpected element {child.tag} in {_localname(el)}", child
            )
        if i < pos:
            raise _metadata_error(
                f"element {_localname(child)} out of order in {_localname(el)} (rim.xsd sequence)",
                child,
            )
        if i == pos and not order[i][1]:
            raise _metadata_error(f"element {_localname(child)} repeated in {_localname(el)}", child)
        pos = i
    return children


def _check_attributes(el: etree._Element, allowed: frozenset[str]) -> None:
    names = el.keys()
    if not names or allowed.issuperset(names):
        return
    for name in names:
        if name.startswith("{"):
            continue  # foreign-namespace attributes (xsi:schemaLocation…) carry no metadata
        if name not in allowed:
            raise _metadata_error(f"unexpected attribute {name} on {_localname(el)}", el)


def _required(el: etree._Element, name: str) -> str:
    value = el.get(name)
    if value is None:
        raise _metadata_error(f"{_localname(el)} lacks the required attribute {name}", el)
    return value


def _parse_bool(el: etree._Element, name: str) -> bool | None:
    raw = el.get(name)
    if raw is None:
        return None
    v = raw.strip()
    if v in ("true", "1"):
        return True
    if v in ("false", "0"):
        return False
    raise _metadata_error(f"{name}={raw!r} is not an xs:boolean", el)


def _parse_int(el: etree._Element, name: str, default: int) -> int:
    raw = el.get(name)
    if raw is None:
        return default
    try:
        return int(raw.strip())
    except ValueError:
        raise _metadata_error(f"{name}={raw!r} is not an xs:integer", el) from None


def _value_text(el: etree._Element) -> str:
    parts = [el.text or ""]
    for child in el:
        if isinstance(child.tag, str):
            raise _metadata_error("rim:Value must contain text only", child)
        parts.append(child.tail or "")
    return "".join(parts)


_NO_ATTRS: frozenset[str] = frozenset()
_SLOT_ATTRS = frozenset({"name", "slotType"})
_SLOT_SEQ = _Seq((T_VALUE_LIST, False))
_VALUE_LIST_SEQ = _Seq((T_VALUE, True))
_ISTRING_SEQ = _Seq((T_LOCALIZED_STRING, True))
_LOCALIZED_STRING_ATTRS = frozenset({"value", "charset"})
_VERSION_INFO_ATTRS = frozenset({"versionName", "comment"})


def _parse_slot(el: etree._Element) -> M.Slot:
    _check_attributes(el, _SLOT_ATTRS)
    if getattr(_parsing, "text_checked", False):
        slot = _plain_slot(el)
        if slot is not None:
            return slot
    children = _sequence(el, _SLOT_SEQ)
    if not children:
        raise _metadata_error("rim:Slot lacks its rim:ValueList", el)
    value_list = children[0]
    _check_attributes(value_list, _NO_ATTRS)
    value_elements = _sequence(value_list, _VALUE_LIST_SEQ)
    values = tuple([_value_text(v) for v in value_elements])
    for v in value_elements:
        _check_attributes(v, _NO_ATTRS)
    return M.Slot(name=_required(el, "name"), values=values, slot_type=el.get("slotType"))


def _plain_slot(el: etree._Element) -> M.Slot | None:
    """The usual Slot (one ValueList of attribute-less, text-only Values, nothing else) read
    directly; None for anything else, which `_parse_slot` then reads (or refuses) in full.
    Only when the document holds no stray text (`_parsing.text_checked`)."""
    children = list(el.iterchildren(etree.Element))
    if len(children) != 1:
        return None
    value_list = children[0]
    if value_list.tag != T_VALUE_LIST or value_list.keys():
        return None
    values = []
    for v in value_list.iterchildren(etree.Element):
        if v.tag != T_VALUE or len(v) or v.keys():
            return None
        values.append(v.text or "")
    name = el.get("name")
    if name is None:
        return None
    return M.Slot(name=name, values=tuple(values), slot_type=el.get("slotType"))


_PLAIN_LOCALIZED_STRING_ATTRS = frozenset({"value", "charset", _XML_LANG})


def _parse_international_string(el: etree._Element) -> tuple[M.LocalizedString, ...]:
    if getattr(_parsing, "text_checked", False) and not el.keys():
        # The usual Name/Description: LocalizedStrings with known attributes and no content.
        plain = []
        for ls in el.iterchildren(etree.Element):
            value = ls.get("value")
            if (ls.tag != T_LOCALIZED_STRING or len(ls) or value is None
                    or not _PLAIN_LOCALIZED_STRING_ATTRS.issuperset(ls.keys())):
                break
            plain.append(M.LocalizedString(value=value, lang=ls.get(_XML_LANG), charset=ls.get("charset")))
        else:
            return tuple(plain)
    _check_attributes(el, _NO_ATTRS)
    out = []
    for ls in _sequence(el, _ISTRING_SEQ):
        _check_attributes(ls, _LOCALIZED_STRING_ATTRS)
        if _element_children(ls):
            raise _metadata_error("rim:LocalizedString must be empty", ls)
        out.append(
            M.LocalizedString(
                value=_required(ls, "value"), lang=ls.get(_XML_LANG), charset=ls.get("charset")
            )
        )
    return tuple(out)


def _parse_version_info(el: etree._Element) -> tuple[str | None, str | None]:
    _check_attributes(el, _VERSION_INFO_ATTRS)
    if _element_children(el):
        raise _metadata_error(f"{_localname(el)} must be empty", el)
    return el.get("versionName"), el.get("comment")


_RO_ORDER = _Seq(
    (T_SLOT, True),
    (T_NAME, False),
    (T_DESCRIPTION, False),
    (T_VERSION_INFO, False),
    (T_CLASSIFICATION, True),
    (T_EXTERNAL_IDENTIFIER, True),
)
_EXTRINSIC_OBJECT_ORDER = _RO_ORDER + _Seq((T_CONTENT_VERSION_INFO, False))
_ADHOC_QUERY_ORDER = _RO_ORDER + _Seq((_R + "QueryExpression", False))
_CLASSIFICATION_ATTRS = _RO_ATTRS | {
    "classificationScheme", "classifiedObject", "classificationNode", "nodeRepresentation"
}
_EXTERNAL_IDENTIFIER_ATTRS = _RO_ATTRS | {"registryObject", "identificationScheme", "value"}
_EXTRINSIC_OBJECT_ATTRS = _RO_ATTRS | {"mimeType", "isOpaque"}
_ASSOCIATION_ATTRS = _RO_ATTRS | {"associationType", "sourceObject", "targetObject"}
_OBJECT_REF_ATTRS = frozenset({"id", "home", "createReplica"})


def _parse_leaf_children(el: etree._Element) -> dict[str, Any]:
    """Slot*, Name?, Description? — what the model keeps for Classification/ExternalIdentifier."""
    children = _sequence(el, _RO_ORDER)
    kw: dict[str, Any] = {"slots": [], "name": (), "description": ()}
    for child in children:
        tag = child.tag
        if tag == T_SLOT:
            kw["slots"].append(_parse_slot(child))
        elif tag == T_NAME:
            kw["name"] = _parse_international_string(child)
        elif tag == T_DESCRIPTION:
            kw["description"] = _parse_international_string(child)
        else:
            raise _metadata_error(
                f"{_localname(child)} inside {_localname(el)} is not supported", child
            )
    kw["slots"] = tuple(kw["slots"])
    return kw


def _ro_attributes(el: etree._Element) -> dict[str, Any]:
    return {
        "lid": el.get("lid"),
        "object_type": el.get("objectType"),
        "status": el.get("status"),
        "home": el.get("home"),
    }


def _parse_classification(el: etree._Element) -> M.Classification:
    _check_attributes(el, _CLASSIFICATION_ATTRS)
    return M.Classification(
        id=_required(el, "id"),
        classified_object=_required(el, "classifiedObject"),
        classification_scheme=_scheme_ref(el.get("classificationScheme")),
        classification_node=_scheme_ref(el.get("classificationNode")),
        node_representation=el.get("nodeRepresentation"),
        **_ro_attributes(el),
        **_parse_leaf_children(el),
    )


def _scheme_ref(value: str | None) -> str | None:
    """A classification/identification scheme or node reference (a urn:uuid:, ITI TF-3 §4.2.5),
    with white space removed: a UUID holds none, and some sources (IPF's fixtures) wrap lines
    inside it. Stored and returned normalised, so consumers get a usable id."""
    if value is None or not value.lower().startswith("urn:uuid:"):
        return value
    return "".join(value.split())


def _parse_external_identifier(el: etree._Element) -> M.ExternalIdentifier:
    _check_attributes(el, _EXTERNAL_IDENTIFIER_ATTRS)
    return M.ExternalIdentifier(
        id=_required(el, "id"),
        registry_object=_required(el, "registryObject"),
        identification_scheme=_scheme_ref(_required(el, "identificationScheme")),
        value=_required(el, "value"),
        **_ro_attributes(el),
        **_parse_leaf_children(el),
    )


def _parse_registry_object_body(el: etree._Element, order: _Seq = _RO_ORDER) -> dict[str, Any]:
    """Attributes and children common to ExtrinsicObject, RegistryPackage and Association."""
    children = _sequence(el, order)
    slots: list[M.Slot] = []
    classifications: list[M.Classification] = []
    external_identifiers: list[M.ExternalIdentifier] = []
    kw: dict[str, Any] = {"id": _required(el, "id"), **_ro_attributes(el)}
    for child in children:
        tag = child.tag
        if tag == T_SLOT:
            slots.append(_parse_slot(child))
        elif tag == T_NAME:
            kw["name"] = _parse_international_string(child)
        elif tag == T_DESCRIPTION:
            kw["description"] = _parse_international_string(child)
        elif tag == T_VERSION_INFO:
            kw["version_name"], kw["version_comment"] = _parse_version_info(child)
        elif tag == T_CLASSIFICATION:
            classifications.append(_parse_classification(child))
        elif tag == T_EXTERNAL_IDENTIFIER:
            external_identifiers.append(_parse_external_identifier(child))
        elif tag == T_CONTENT_VERSION_INFO:
            kw["content_version_name"], kw["content_version_comment"] = _parse_version_info(child)
        else:  # pragma: no cover - _sequence only lets the tags above through
            raise _metadata_error(f"unexpected element {child.tag}", child)
    kw["slots"] = tuple(slots)
    kw["classifications"] = tuple(classifications)
    kw["external_identifiers"] = tuple(external_identifiers)
    return kw


def _parse_extrinsic_object(el: etree._Element) -> M.DocumentEntry:
    _check_attributes(el, _EXTRINSIC_OBJECT_ATTRS)
    kw = _parse_registry_object_body(el, _EXTRINSIC_OBJECT_ORDER)
    return M.DocumentEntry(mime_type=el.get("mimeType"), is_opaque=_parse_bool(el, "isOpaque"), **kw)


def _parse_association(el: etree._Element) -> M.Association:
    _check_attributes(el, _ASSOCIATION_ATTRS)
    kw = _parse_registry_object_body(el)
    return M.Association(
        association_type=_required(el, "associationType"),
        source_object=_required(el, "sourceObject"),
        target_object=_required(el, "targetObject"),
        **kw,
    )


def _parse_package_body(el: etree._Element) -> dict[str, Any]:
    _check_attributes(el, _RO_ATTRS)
    for child in _element_children(el):
        if child.tag == T_REGISTRY_OBJECT_LIST:
            raise _metadata_error(
                "a rim:RegistryObjectList inside a rim:RegistryPackage is not used by XDS; "
                "membership is expressed with HasMember associations (ITI TF-3 §4.2.2.1)",
                child,
            )
    return _parse_registry_object_body(el)


def _package_from(kw: dict[str, Any], el: etree._Element) -> M.SubmissionSet | M.Folder:
    """SubmissionSet or Folder by the classification node (ITI TF-3 §4.2.3.3, §4.2.3.4)."""
    nodes = {c.classification_node for c in kw["classifications"]}
    is_ss = C.SS_CLASSIFICATION_NODE in nodes
    is_folder = C.FOLDER_CLASSIFICATION_NODE in nodes
    if is_ss and is_folder:
        raise _metadata_error(
            f"RegistryPackage {kw['id']} is classified both as SubmissionSet and as Folder", el
        )
    if is_ss:
        return M.SubmissionSet(**kw)
    if is_folder:
        return M.Folder(**kw)
    raise _metadata_error(
        f"RegistryPackage {kw['id']} is classified neither as SubmissionSet "
        f"({C.SS_CLASSIFICATION_NODE}) nor as Folder ({C.FOLDER_CLASSIFICATION_NODE})",
        el,
    )


def _parse_object_ref(el: etree._Element) -> M.ObjectRef:
    _check_attributes(el, _OBJECT_REF_ATTRS)
    if _element_children(el):
        raise _metadata_error("Slots on rim:ObjectRef are not supported", el)
    return M.ObjectRef(id=_required(el, "id"), home=el.get("home"))


def element_to_object(el: etree._Element) -> M.RegistryObject:
    """One rim:ExtrinsicObject / RegistryPackage / Association (e.g. a stored fragment) → model."""
    if el.tag == T_EXTRINSIC_OBJECT:
        return _parse_extrinsic_object(el)
    if el.tag == T_ASSOCIATION:
        return _parse_association(el)
    if el.tag == T_REGISTRY_PACKAGE:
        return _package_from(_parse_package_body(el), el)
    raise _metadata_error(f"expected a rim registry object, found {el.tag}", el)


# --- SubmitObjectsRequest ----------------------------------------------------------------


@attrs.frozen
class WireLayout:
    """Document order of a request's rim:RegistryObjectList children, for a faithful write-back.

    Entries: ``("object", i)`` is ``req.objects[i]``, ``("ref", j)`` is ``req.object_refs[j]``,
    ``("classification", i, k)`` is ``req.objects[i].classifications[k]`` written top level.
    """

    entries: tuple[tuple[Any, ...], ...] = ()

    def top_level(self) -> frozenset[tuple[int, int]]:
        return frozenset((e[1], e[2]) for e in self.entries if e[0] == "classification")


_REQUEST_SLOT_LIST_SEQ = _Seq((T_SLOT, True))
_SUBMIT_OBJECTS_REQUEST_ATTRS = frozenset({"id", "comment"})
_SUBMIT_OBJECTS_REQUEST_SEQ = _Seq((T_REQUEST_SLOT_LIST, False), (T_REGISTRY_OBJECT_LIST, False))
_ADHOC_QUERY_REQUEST_SEQ = _Seq(
    (T_REQUEST_SLOT_LIST, False), (T_RESPONSE_OPTION, False), (T_ADHOC_QUERY, False)
)


def _parse_request_slots(el: etree._Element) -> tuple[M.Slot, ...]:
    _check_attributes(el, _NO_ATTRS)
    return tuple(_parse_slot(s) for s in _sequence(el, _REQUEST_SLOT_LIST_SEQ))


def parse_submit_objects_request_with_layout(
    el: etree._Element,
) -> tuple[M.SubmitObjectsRequest, WireLayout]:
    """lcm:SubmitObjectsRequest → (model, layout). ITI TF-2b §3.42.4.1.3."""
    # One XPath over the whole request instead of a text check at every element, when it
    # shows there is nothing to find (the usual case); else every element is checked.
    _parsing.text_checked = el.tag == T_SUBMIT_OBJECTS_REQUEST and _no_stray_text(el)
    try:
        return _parse_submit_objects_request(el)
    finally:
        _parsing.text_checked = False


def _parse_submit_objects_request(el: etree._Element) -> tuple[M.SubmitObjectsRequest, WireLayout]:
    if el.tag != T_SUBMIT_OBJECTS_REQUEST:
        raise _metadata_error(f"expected lcm:SubmitObjectsRequest, found {el.tag}", el)
    _check_attributes(el, _SUBMIT_OBJECTS_REQUEST_ATTRS)
    children = _sequence(el, _SUBMIT_OBJECTS_REQUEST_SEQ)
    request_slots: tuple[M.Slot, ...] = ()
    rol: etree._Element | None = None
    for child in children:
        if child.tag == T_REQUEST_SLOT_LIST:
            request_slots = _parse_request_slots(child)
        else:
            rol = child
    if rol is None:
        raise _metadata_error("lcm:SubmitObjectsRequest lacks its rim:RegistryObjectList", el)
    _check_attributes(rol, _NO_ATTRS)

    # First pass: every child parsed; packages kept as keyword sets until their classifications
    # (possibly top level, possibly after them) are known.
    pending: list[tuple[str, Any, etree._Element]] = []  # (kind, payload, element)
    refs: list[M.ObjectRef] = []
    top_classifications: list[tuple[M.Classification, etree._Element]] = []
    order: list[tuple[str, int]] = []  # ("object", pending index) / ("ref", j) / ("tlc", t)
    for child in _element_children(rol):
        tag = child.tag
        if tag == T_EXTRINSIC_OBJECT:
            order.append(("object", len(pending)))
            pending.append(("object", _parse_extrinsic_object(child), child))
        elif tag == T_ASSOCIATION:
            order.append(("object", len(pending)))
            pending.append(("object", _parse_association(child), child))
        elif tag == T_REGISTRY_PACKAGE:
            order.append(("object", len(pending)))
            pending.append(("package", _parse_package_body(child), child))
        elif tag == T_OBJECT_REF:
            order.append(("ref", len(refs)))
            refs.append(_parse_object_ref(child))
        elif tag == T_CLASSIFICATION:
            order.append(("tlc", len(top_classifications)))
            top_classifications.append((_parse_classification(child), child))
        else:
            raise _metadata_error(
                f"unexpected element {tag} in rim:RegistryObjectList "
                "(XDS submits ExtrinsicObject, RegistryPackage, Association, Classification, ObjectRef)",
                child,
            )

    # Fold top-level classifications into their classified object, after its nested ones.
    by_id: dict[str, int] = {}
    for i, (_, payload, _el) in enumerate(pending):
        by_id.setdefault(payload["id"] if isinstance(payload, dict) else payload.id, i)
    tlc_position: dict[int, tuple[int, int]] = {}
    extra: dict[int, list[M.Classification]] = {}
    for t, (cl, cl_el) in enumerate(top_classifications):
        i = by_id.get(cl.classified_object)
        if i is None:
            raise _metadata_error(
                f"top-level Classification {cl.id} classifies {cl.classified_object}, "
                "which is not an object of this submission",
                cl_el,
            )
        extra.setdefault(i, []).append(cl)
        kind, payload, _el = pending[i]
        nested = len(payload["classifications"] if kind == "package" else payload.classifications)
        tlc_position[t] = (i, nested + len(extra[i]) - 1)

    objects: list[M.RegistryObject] = []
    for i, (kind, payload, obj_el) in enumerate(pending):
        added = tuple(extra.get(i, ()))
        if kind == "package":
            payload["classifications"] = payload["classifications"] + added
            objects.append(_package_from(payload, obj_el))
        else:
            objects.append(
                attrs.evolve(payload, classifications=payload.classifications + added)
                if added
                else payload
            )

    entries: list[tuple[Any, ...]] = []
    for kind, n in order:
        if kind == "tlc":
            entries.append(("classification", *tlc_position[n]))
        else:
            entries.append((kind, n))
    req = M.SubmitObjectsRequest(
        objects=tuple(objects),
        object_refs=tuple(refs),
        slots=request_slots,
        id=el.get("id"),
        comment=el.get("comment"),
    )
    return req, WireLayout(tuple(entries))


def parse_submit_objects_request(el: etree._Element) -> M.SubmitObjectsRequest:
    """lcm:SubmitObjectsRequest → model (ITI TF-2b §3.42.4.1.3); see the module notes."""
    return parse_submit_objects_request_with_layout(el)[0]


# --- AdhocQueryRequest -------------------------------------------------------------------


@attrs.frozen
class AdhocQueryRequest:
    """query:AdhocQueryRequest of a stored query (ITI TF-2a §3.18.4.1.2).

    Slot values are kept raw; `registry.queries` parses the parameter value syntax.
    `return_type` is kept as sent (schema default "RegistryObject" when absent); XDS allows only
    "LeafClass" and "ObjectRef", which the stored query handler checks.
    """

    query_id: str
    slots: tuple[M.Slot, ...] = ()
    return_type: str = "RegistryObject"
    return_composed_objects: bool = False
    home: str | None = None
    federated: bool = False
    federation: str | None = None
    start_index: int = 0
    max_results: int = -1
    id: str | None = None
    comment: str | None = None
    request_slots: tuple[M.Slot, ...] = ()

    def slot(self, name: str) -> tuple[str, ...]:
        """Values of the first slot called `name` (a repeated slot is the handler's concern)."""
        for s in self.slots:
            if s.name == name:
                return s.values
        return ()


def parse_adhoc_query_request(el: etree._Element) -> AdhocQueryRequest:
    if el.tag != T_ADHOC_QUERY_REQUEST:
        raise _metadata_error(f"expected query:AdhocQueryRequest, found {el.tag}", el)
    _check_attributes(
        el, frozenset({"id", "comment", "federated", "federation", "startIndex", "maxResults"})
    )
    children = _sequence(el, _ADHOC_QUERY_REQUEST_SEQ)
    request_slots: tuple[M.Slot, ...] = ()
    option = query = None
    for child in children:
        if child.tag == T_REQUEST_SLOT_LIST:
            request_slots = _parse_request_slots(child)
        elif child.tag == T_RESPONSE_OPTION:
            option = child
        else:
            query = child
    if option is None or query is None:
        raise _metadata_error(
            "query:AdhocQueryRequest needs query:ResponseOption and rim:AdhocQuery", el
        )
    _check_attributes(option, frozenset({"returnType", "returnComposedObjects"}))
    # rim:AdhocQuery is a RegistryObjectType (+ QueryExpression); a stored query uses its id and
    # Slots only (ITI TF-2a §3.18.4.1.2.3), the other children are accepted and ignored.
    slots = []
    for child in _sequence(query, _ADHOC_QUERY_ORDER):
        if child.tag == T_SLOT:
            slots.append(_parse_slot(child))
    return AdhocQueryRequest(
        query_id=_required(query, "id").strip(),
        home=query.get("home"),
        slots=tuple(slots),
        return_type=(option.get("returnType") or "RegistryObject").strip(),
        return_composed_objects=bool(_parse_bool(option, "returnComposedObjects")),
        federated=bool(_parse_bool(el, "federated")),
        federation=el.get("federation"),
        start_index=_parse_int(el, "startIndex", 0),
        max_results=_parse_int(el, "maxResults", -1),
        id=el.get("id"),
        comment=el.get("comment"),
        request_slots=request_slots,
    )


# ============================================================================================
# Serialising: model → wire
# ============================================================================================


def _set(el: etree._Element, name: str, value: str | None) -> None:
    if value is not None:
        el.set(name, value)


def _sub(parent: etree._Element, tag: str) -> etree._Element:
    return etree.SubElement(parent, tag)


_SubElement = etree.SubElement


def _write_slots(parent: etree._Element, slots: Iterable[M.Slot]) -> None:
    for s in slots:
        attrib = {"name": s.name} if s.slot_type is None else {"name": s.name, "slotType": s.slot_type}
        vl = _SubElement(_SubElement(parent, T_SLOT, attrib), T_VALUE_LIST)
        for v in s.values:
            value = _SubElement(vl, T_VALUE)
            if v:
                value.text = v  # "" stays <rim:Value/>, the form it parses back from


def _write_istring(parent: etree._Element, tag: str, strings: tuple[M.LocalizedString, ...]) -> None:
    if not strings:
        return
    el = _SubElement(parent, tag)
    for ls in strings:
        if ls.lang is None and ls.charset is None:
            _SubElement(el, T_LOCALIZED_STRING, value=ls.value)
            continue
        attrib = {}
        if ls.lang is not None:
            attrib[_XML_LANG] = ls.lang
        if ls.charset is not None:
            attrib["charset"] = ls.charset
        attrib["value"] = ls.value
        _SubElement(el, T_LOCALIZED_STRING, attrib)


def _write_version(parent: etree._Element, tag: str, name: str | None, comment: str | None) -> None:
    if name is None and comment is None:
        return
    el = _SubElement(parent, tag)
    _set(el, "versionName", name)
    _set(el, "comment", comment)


def _ro_attrib(obj: Any) -> dict[str, str]:
    """The attributes every rim:RegistryObjectType has, in the order they are written."""
    attrib = {"id": obj.id}
    if obj.lid is not None:
        attrib["lid"] = obj.lid
    if obj.object_type is not None:
        attrib["objectType"] = obj.object_type
    if obj.status is not None:
        attrib["status"] = obj.status
    if obj.home is not None:
        attrib["home"] = obj.home
    return attrib


def _classification_element(tag_parent: etree._Element | None, c: M.Classification) -> etree._Element:
    attrib = _ro_attrib(c)
    if c.classification_scheme is not None:
        attrib["classificationScheme"] = c.classification_scheme
    attrib["classifiedObject"] = c.classified_object
    if c.classification_node is not None:
        attrib["classificationNode"] = c.classification_node
    if c.node_representation is not None:
        attrib["nodeRepresentation"] = c.node_representation
    el = (
        etree.Element(T_CLASSIFICATION, attrib, nsmap=_RIM_NSMAP)
        if tag_parent is None
        else _SubElement(tag_parent, T_CLASSIFICATION, attrib)
    )
    _write_slots(el, c.slots)
    _write_istring(el, T_NAME, c.name)
    _write_istring(el, T_DESCRIPTION, c.description)
    return el


def _write_external_identifier(parent: etree._Element, e: M.ExternalIdentifier) -> None:
    attrib = _ro_attrib(e)
    attrib["registryObject"] = e.registry_object
    attrib["identificationScheme"] = e.identification_scheme
    attrib["value"] = e.value
    el = _SubElement(parent, T_EXTERNAL_IDENTIFIER, attrib)
    _write_slots(el, e.slots)
    _write_istring(el, T_NAME, e.name)
    _write_istring(el, T_DESCRIPTION, e.description)


def _object_element(
    obj: M.RegistryObject, parent: etree._Element | None, skip: frozenset[int] = frozenset()
) -> etree._Element:
    if not isinstance(obj, (M.DocumentEntry, M.Association, M.SubmissionSet, M.Folder)):
        raise TypeError(f"not a registry object: {type(obj).__name__}")
    attrib = _ro_attrib(obj)
    if isinstance(obj, M.DocumentEntry):
        tag = T_EXTRINSIC_OBJECT
        if obj.mime_type is not None:
            attrib["mimeType"] = obj.mime_type
        if obj.is_opaque is not None:
            attrib["isOpaque"] = "true" if obj.is_opaque else "false"
    elif isinstance(obj, M.Association):
        tag = T_ASSOCIATION
        attrib["associationType"] = obj.association_type
        attrib["sourceObject"] = obj.source_object
        attrib["targetObject"] = obj.target_object
    else:
        tag = T_REGISTRY_PACKAGE
    el = etree.Element(tag, attrib, nsmap=_RIM_NSMAP) if parent is None else _SubElement(parent, tag, attrib)
    _write_slots(el, obj.slots)
    _write_istring(el, T_NAME, obj.name)
    _write_istring(el, T_DESCRIPTION, obj.description)
    _write_version(el, T_VERSION_INFO, obj.version_name, obj.version_comment)
    if skip:
        for k, c in enumerate(obj.classifications):
            if k not in skip:
                _classification_element(el, c)
    else:
        for c in obj.classifications:
            _classification_element(el, c)
    for e in obj.external_identifiers:
        _write_external_identifier(el, e)
    if isinstance(obj, M.DocumentEntry):
        _write_version(
            el, T_CONTENT_VERSION_INFO, obj.content_version_name, obj.content_version_comment
        )
    return el


def object_to_element(obj: M.RegistryObject) -> etree._Element:
    """A self-contained rim element (declares xmlns:rim) for one object, classifications nested."""
    return _object_element(obj, None)


def object_to_bytes(obj: M.RegistryObject) -> bytes:
    """The stored fragment of an object: UTF-8, no XML declaration, valid in a RegistryObjectList.

    The bytes are exactly `etree.tostring(object_to_element(obj), encoding="UTF-8")` (a property
    test holds the two together), written without building a tree: the fragment of every
    registered object is written once per registration, and libxml2 trees cost ~1 µs an element.
    Strings XML cannot carry (control characters…) take the lxml path, which refuses them."""
    if not isinstance(obj, (M.DocumentEntry, M.Association, M.SubmissionSet, M.Folder)):
        raise TypeError(f"not a registry object: {type(obj).__name__}")
    text = "".join(_FragmentWriter(obj).parts)
    data = text.encode("utf-8", "surrogatepass")
    if len(data.translate(None, _NOT_XML_BYTES)) != len(data) or "\ufffe" in text or "\uffff" in text or (
        len(data) != len(text) and _has_surrogate(text)
    ):
        return etree.tostring(object_to_element(obj), encoding="UTF-8", xml_declaration=False)
    return data


# Bytes no XML 1.0 document may contain (C0 controls but tab, LF, CR); UTF-8 never uses them
# inside a multi-byte character, so finding one in the encoded text is finding the character.
_NOT_XML_BYTES = bytes(b for b in range(0x20) if b not in (0x09, 0x0A, 0x0D))


def _has_surrogate(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _attr(value: str) -> str:
    """An attribute value escaped as libxml2 writes it."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if '"' in value:
        value = value.replace('"', "&quot;")
    if "\n" in value:
        value = value.replace("\n", "&#10;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    if "\t" in value:
        value = value.replace("\t", "&#9;")
    return value


def _text(value: str) -> str:
    """Character data escaped as libxml2 writes it."""
    if "&" in value:
        value = value.replace("&", "&amp;")
    if "<" in value:
        value = value.replace("<", "&lt;")
    if ">" in value:
        value = value.replace(">", "&gt;")
    if "\r" in value:
        value = value.replace("\r", "&#13;")
    return value


class _FragmentWriter:
    """`object_to_bytes` as text pieces, in the element and attribute order of `_object_element`."""

    __slots__ = ("parts",)

    def __init__(self, obj: M.RegistryObject) -> None:
        self.parts: list[str] = []
        self.registry_object(obj)

    def _open(self, tag: str, attrib: dict[str, str], root: bool = False) -> None:
        p = self.parts
        p.append("<rim:" + tag)
        if root:
            p.append(_ROOT_XMLNS)
        for name, value in attrib.items():
            p.append(f' {name}="{_attr(value)}"')

    def registry_object(self, obj: M.RegistryObject) -> None:
        attrib = _ro_attrib(obj)
        if isinstance(obj, M.DocumentEntry):
            tag = "ExtrinsicObject"
            if obj.mime_type is not None:
                attrib["mimeType"] = obj.mime_type
            if obj.is_opaque is not None:
                attrib["isOpaque"] = "true" if obj.is_opaque else "false"
        elif isinstance(obj, M.Association):
            tag = "Association"
            attrib["associationType"] = obj.association_type
            attrib["sourceObject"] = obj.source_object
            attrib["targetObject"] = obj.target_object
        else:
            tag = "RegistryPackage"
        self._open(tag, attrib, root=True)
        content = isinstance(obj, M.DocumentEntry) and not (
            obj.content_version_name is None and obj.content_version_comment is None
        )
        if not (
            obj.slots or obj.name or obj.description or obj.classifications
            or obj.external_identifiers or obj.version_name is not None
            or obj.version_comment is not None or content
        ):
            self.parts.append("/>")
            return
        self.parts.append(">")
        self.slots(obj.slots)
        self.istring("Name", obj.name)
        self.istring("Description", obj.description)
        self.version("VersionInfo", obj.version_name, obj.version_comment)
        for c in obj.classifications:
            self.classification(c)
        for e in obj.external_identifiers:
            self.external_identifier(e)
        if content:
            self.version("ContentVersionInfo", obj.content_version_name, obj.content_version_comment)
        self.parts.append(f"</rim:{tag}>")

    def slots(self, slots: Iterable[M.Slot]) -> None:
        p = self.parts
        for s in slots:
            if s.slot_type is None:
                p.append(f'<rim:Slot name="{_attr(s.name)}">')
            else:
                p.append(f'<rim:Slot name="{_attr(s.name)}" slotType="{_attr(s.slot_type)}">')
            if not s.values:
                p.append("<rim:ValueList/></rim:Slot>")
                continue
            p.append("<rim:ValueList>")
            for v in s.values:
                p.append(f"<rim:Value>{_text(v)}</rim:Value>" if v else "<rim:Value/>")
            p.append("</rim:ValueList></rim:Slot>")

    def istring(self, tag: str, strings: tuple[M.LocalizedString, ...]) -> None:
        if not strings:
            return
        p = self.parts
        p.append(f"<rim:{tag}>")
        for ls in strings:
            p.append("<rim:LocalizedString")
            if ls.lang is not None:
                p.append(f' xml:lang="{_attr(ls.lang)}"')
            if ls.charset is not None:
                p.append(f' charset="{_attr(ls.charset)}"')
            p.append(f' value="{_attr(ls.value)}"/>')
        p.append(f"</rim:{tag}>")

    def version(self, tag: str, name: str | None, comment: str | None) -> None:
        if name is None and comment is None:
            return
        p = self.parts
        p.append(f"<rim:{tag}")
        if name is not None:
            p.append(f' versionName="{_attr(name)}"')
        if comment is not None:
            p.append(f' comment="{_attr(comment)}"')
        p.append("/>")

    def classification(self, c: M.Classification) -> None:
        attrib = _ro_attrib(c)
        if c.classification_scheme is not None:
            attrib["classificationScheme"] = c.classification_scheme
        attrib["classifiedObject"] = c.classified_object
        if c.classification_node is not None:
            attrib["classificationNode"] = c.classification_node
        if c.node_representation is not None:
            attrib["nodeRepresentation"] = c.node_representation
        self._leaf("Classification", attrib, c)

    def external_identifier(self, e: M.ExternalIdentifier) -> None:
        attrib = _ro_attrib(e)
        attrib["registryObject"] = e.registry_object
        attrib["identificationScheme"] = e.identification_scheme
        attrib["value"] = e.value
        self._leaf("ExternalIdentifier", attrib, e)

    def _leaf(self, tag: str, attrib: dict[str, str], obj: Any) -> None:
        self._open(tag, attrib)
        if not (obj.slots or obj.name or obj.description):
            self.parts.append("/>")
            return
        self.parts.append(">")
        self.slots(obj.slots)
        self.istring("Name", obj.name)
        self.istring("Description", obj.description)
        self.parts.append(f"</rim:{tag}>")


_ROOT_XMLNS = f' xmlns:rim="{C.NS_RIM}"'


def submit_objects_request_to_element(
    req: M.SubmitObjectsRequest, layout: WireLayout | None = None
) -> etree._Element:
    """model → lcm:SubmitObjectsRequest. Without a layout: objects in order, then ObjectRefs, every
    classification nested; with the layout of a parsed request: its exact document order."""
    root = etree.Element(
        T_SUBMIT_OBJECTS_REQUEST, nsmap={"lcm": C.NS_LCM, "rim": C.NS_RIM, "rs": C.NS_RS}
    )
    _set(root, "id", req.id)
    _set(root, "comment", req.comment)
    if req.slots:
        _write_slots(_sub(root, T_REQUEST_SLOT_LIST), req.slots)
    rol = _sub(root, T_REGISTRY_OBJECT_LIST)
    entries = list(layout.entries) if layout is not None else []
    top = layout.top_level() if layout is not None else frozenset()
    done_objects = {e[1] for e in entries if e[0] == "object"}
    done_refs = {e[1] for e in entries if e[0] == "ref"}
    entries += [("object", i) for i in range(len(req.objects)) if i not in done_objects]
    entries += [("ref", j) for j in range(len(req.object_refs)) if j not in done_refs]
    for entry in entries:
        kind = entry[0]
        if kind == "object":
            i = entry[1]
            skip = frozenset(k for (oi, k) in top if oi == i)
            _object_element(req.objects[i], rol, skip)
        elif kind == "ref":
            ref = req.object_refs[entry[1]]
            r = _sub(rol, T_OBJECT_REF)
            r.set("id", ref.id)
            _set(r, "home", ref.home)
        else:
            _, i, k = entry
            rol.append(_classification_element(None, req.objects[i].classifications[k]))
    return root


def submit_objects_request_to_bytes(
    req: M.SubmitObjectsRequest, layout: WireLayout | None = None
) -> bytes:
    return etree.tostring(
        submit_objects_request_to_element(req, layout), encoding="UTF-8", xml_declaration=False
    )


# --- Responses ----------------------------------------------------------------------------


def _response_status(errors: Sequence[RegistryError], status: str | None) -> str:
    """ITI TF-3 §4.2.4.2 / ITI TF-2b §3.42.4.2.2.6: Failure iff an error has severity Error;
    warnings alone keep Success. PartialSuccess only when the caller says so."""
    if status is not None:
        return status
    return C.RESPONSE_FAILURE if any(e.severity == C.SEVERITY_ERROR for e in errors) else C.RESPONSE_SUCCESS


def _write_error_list(parent: etree._Element, errors: Sequence[RegistryError]) -> None:
    if not errors:
        return
    lst = _sub(parent, _RS + "RegistryErrorList")
    highest = (
        C.SEVERITY_ERROR if any(e.severity == C.SEVERITY_ERROR for e in errors) else C.SEVERITY_WARNING
    )
    lst.set("highestSeverity", highest)
    for e in errors:
        el = _sub(lst, _RS + "RegistryError")
        code = e.code.value if isinstance(e.code, XdsErrorCode) else str(e.code)
        el.set("errorCode", code)
        el.set("codeContext", e.message)
        el.set("location", e.location or "")
        el.set("severity", e.severity)


def registry_response(
    errors: Sequence[RegistryError] = (), *, status: str | None = None, request_id: str | None = None
) -> etree._Element:
    """rs:RegistryResponse for ITI-42/41/57/62 (ITI TF-3 §4.2.4)."""
    root = etree.Element(_RS + "RegistryResponse", nsmap={"rs": C.NS_RS})
    root.set("status", _response_status(errors, status))
    _set(root, "requestId", request_id)
    _write_error_list(root, errors)
    return root


def registry_response_bytes(
    errors: Sequence[RegistryError] = (), *, status: str | None = None, request_id: str | None = None
) -> bytes:
    return etree.tostring(registry_response(errors, status=status, request_id=request_id), encoding="UTF-8")


_EMPTY_ROL_TAIL = b"<rim:RegistryObjectList/></query:AdhocQueryResponse>"


def adhoc_query_response_bytes(
    *,
    status: str,
    errors: Sequence[RegistryError] = (),
    leaf_fragments: Sequence[bytes] = (),
    object_refs: Sequence[tuple[str, str | None]] = (),
) -> bytes:
    """query:AdhocQueryResponse (ITI TF-2a §3.18.4.1.3). The LeafClass list is the concatenation
    of stored fragments (`object_to_bytes`), not re-parsed; ObjectRefs are (id, home) pairs."""
    return b"".join(adhoc_query_response_pieces(
        status=status, errors=errors, leaf_fragments=leaf_fragments, object_refs=object_refs))


def adhoc_query_response_pieces(
    *,
    status: str,
    errors: Sequence[RegistryError] = (),
    leaf_fragments: Sequence[bytes] = (),
    object_refs: Sequence[tuple[str, str | None]] = (),
) -> tuple[bytes, ...]:
    """`adhoc_query_response_bytes` as consecutive pieces: the stored fragments stay apart (a
    FindDocuments answer is 200 of them, 1.27 MB: joined once, at the socket)."""
    root = etree.Element(
        _Q + "AdhocQueryResponse", nsmap={"query": C.NS_QUERY, "rs": C.NS_RS, "rim": C.NS_RIM}
    )
    root.set("status", status)
    _write_error_list(root, errors)
    rol = _sub(root, T_REGISTRY_OBJECT_LIST)
    for ident, home in object_refs:
        r = _sub(rol, T_OBJECT_REF)
        r.set("id", ident)
        _set(r, "home", home)
    if not leaf_fragments:
        return (etree.tostring(root, encoding="UTF-8"),)
    skeleton = etree.tostring(root, encoding="UTF-8")
    if object_refs or not skeleton.endswith(_EMPTY_ROL_TAIL):
        raise ValueError("a response carries either LeafClass fragments or ObjectRefs")
    return (
        skeleton[: -len(_EMPTY_ROL_TAIL)] + b"<rim:RegistryObjectList>",
        *leaf_fragments,
        b"</rim:RegistryObjectList></query:AdhocQueryResponse>",
    )


# ============================================================================================
# Helpers for the registry
# ============================================================================================


def with_status(obj: M.RegistryObject, status: str) -> M.RegistryObject:
    return attrs.evolve(obj, status=status)


def set_slot(obj: Any, name: str, values: Iterable[str]) -> Any:
    """`obj` with slot `name` set to `values`: the first slot of that name is replaced in place
    (keeping its slotType), later duplicates removed; appended if absent."""
    new_values = tuple(values)
    out: list[M.Slot] = []
    found = False
    for s in obj.slots:
        if s.name != name:
            out.append(s)
        elif not found:
            out.append(attrs.evolve(s, values=new_values))
            found = True
    if not found:
        out.append(M.Slot(name=name, values=new_values))
    return attrs.evolve(obj, slots=tuple(out))


_parsers = threading.local()


def _fragment_parser() -> etree.XMLParser:
    p = getattr(_parsers, "parser", None)
    if p is None:
        p = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False)
        _parsers.parser = p
    return p


def replace_status_in_fragment(xml_bytes: bytes, status: str) -> bytes:
    """A stored fragment with its root's status attribute set to `status` (e.g. on deprecation)."""
    root = etree.fromstring(xml_bytes, _fragment_parser())
    root.set("status", status)
    return etree.tostring(root, encoding="UTF-8", xml_declaration=False)
