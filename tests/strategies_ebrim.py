"""Hypothesis strategies for the ebRIM model (`registry.model`), shared by the test suites,
and the list of real SubmitObjectsRequest samples with a helper to extract them.

    from strategies_ebrim import document_entries, submission_sets, registry_objects, ...
    from strategies_ebrim import SUBMIT_SAMPLES, submit_element

Everything generated survives `registry.ebrim` serialisation: strings hold only characters XML 1.0
can carry, packages carry exactly one SubmissionSet/Folder classification node.
"""

from __future__ import annotations

import attrs
from hypothesis import strategies as st
from lxml import etree

from registry import constants as C
from registry import model as M
from support import need_shared

# XML 1.0 Char production: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF]
xml_chars = st.one_of(
    st.characters(min_codepoint=0x20, blacklist_categories=("Cs",), blacklist_characters="\ufffe\uffff"),
    st.sampled_from("\t\n\r"),
)
xml_text = st.text(xml_chars, max_size=12)
nonempty_text = st.text(xml_chars, min_size=1, max_size=12)
maybe_text = st.none() | xml_text

uuids = st.uuids().map(lambda u: f"urn:uuid:{u}")
ids = uuids | nonempty_text
statuses = st.none() | st.sampled_from(
    [C.STATUS_APPROVED, C.STATUS_DEPRECATED, C.STATUS_SUBMITTED, C.STATUS_DMP_ARCHIVED]
)

localized_strings = st.builds(
    M.LocalizedString,
    value=xml_text,
    lang=st.none() | st.sampled_from(["en-US", "fr-FR", "de"]) | xml_text,
    charset=st.none() | st.sampled_from(["UTF-8", "ISO-8859-1"]),
)
international_strings = st.lists(localized_strings, max_size=3).map(tuple)

slots = st.builds(
    M.Slot,
    name=nonempty_text
    | st.sampled_from(["creationTime", "sourcePatientId", "urn:ihe:iti:xds:2013:referenceIdList"]),
    values=st.lists(xml_text, max_size=4).map(tuple),
    slot_type=st.none() | xml_text,
)
slot_lists = st.lists(slots, max_size=4).map(tuple)


def _ro_common() -> dict:
    return dict(lid=st.none() | ids, object_type=st.none() | ids, status=statuses, home=st.none() | ids)


_PACKAGE_NODES = (C.SS_CLASSIFICATION_NODE, C.FOLDER_CLASSIFICATION_NODE)


def classifications(classified_object: st.SearchStrategy[str] = ids) -> st.SearchStrategy[M.Classification]:
    return st.builds(
        M.Classification,
        id=ids,
        classified_object=classified_object,
        classification_scheme=st.none()
        | st.sampled_from([C.DE_AUTHOR, C.DE_CLASS_CODE, C.DE_TYPE_CODE, C.SS_CONTENT_TYPE_CODE])
        | ids,
        # package typing nodes are added on purpose by the package strategies only
        classification_node=st.none() | ids.filter(lambda s: s not in _PACKAGE_NODES),
        node_representation=maybe_text,
        name=international_strings,
        description=international_strings,
        slots=slot_lists,
        **_ro_common(),
    )


def external_identifiers(registry_object: st.SearchStrategy[str] = ids) -> st.SearchStrategy[M.ExternalIdentifier]:
    return st.builds(
        M.ExternalIdentifier,
        id=ids,
        registry_object=registry_object,
        identification_scheme=st.sampled_from([C.DE_PATIENT_ID, C.DE_UNIQUE_ID, C.SS_SOURCE_ID]) | ids,
        value=xml_text,
        name=international_strings,
        description=international_strings,
        slots=slot_lists,
        **_ro_common(),
    )


@st.composite
def _registry_object(draw, cls, **extra):
    oid = draw(ids)
    kw = {k: draw(v) for k, v in extra.items()}
    return cls(
        id=oid,
        version_name=draw(maybe_text),
        version_comment=draw(maybe_text),
        name=draw(international_strings),
        description=draw(international_strings),
        slots=draw(slot_lists),
        classifications=tuple(draw(st.lists(classifications(st.just(oid) | ids), max_size=3))),
        external_identifiers=tuple(
            draw(st.lists(external_identifiers(st.just(oid) | ids), max_size=3))
        ),
        lid=draw(st.none() | ids),
        object_type=draw(st.none() | ids),
        status=draw(statuses),
        home=draw(st.none() | ids),
        **kw,
    )


document_entries = _registry_object(
    M.DocumentEntry,
    mime_type=st.none() | st.sampled_from(["text/xml", "application/pdf"]) | xml_text,
    is_opaque=st.none() | st.booleans(),
    content_version_name=maybe_text,
    content_version_comment=maybe_text,
)

associations = _registry_object(
    M.Association,
    association_type=st.sampled_from([C.ASSOC_HAS_MEMBER, C.ASSOC_RPLC, C.ASSOC_APND]) | ids,
    source_object=ids,
    target_object=ids,
)


@st.composite
def _package(draw, cls, node):
    obj = draw(_registry_object(cls))
    typing = M.Classification(
        id=draw(ids),
        classified_object=obj.id,
        classification_node=node,
        object_type=draw(st.none() | st.just(C.OBJECT_TYPE_CLASSIFICATION)),
    )
    cls_list = list(obj.classifications)
    cls_list.insert(draw(st.integers(0, len(cls_list))), typing)
    return attrs.evolve(obj, classifications=tuple(cls_list))


submission_sets = _package(M.SubmissionSet, C.SS_CLASSIFICATION_NODE)
folders = _package(M.Folder, C.FOLDER_CLASSIFICATION_NODE)
registry_objects = st.one_of(document_entries, submission_sets, folders, associations)
object_refs = st.builds(M.ObjectRef, id=ids, home=st.none() | ids)

submit_objects_requests = st.builds(
    M.SubmitObjectsRequest,
    objects=st.lists(registry_objects, max_size=4).map(tuple),
    object_refs=st.lists(object_refs, max_size=2).map(tuple),
    slots=slot_lists,
    id=st.none() | ids,
    comment=maybe_text,
)


# --- Real samples (../shared/samples) -------------------------------------------------------

ITI42_SUBMIT_SAMPLES = (
    "iti42/ihe__RegisterDocumentSet-bRequest.xml",
    "iti42/ihe__RegisterDocumentSet-bRequest_SOAP.xml",
    "iti42/ipf__SubmitObjectsRequest_ebrs30.xml",
    "iti42/ipf__SubmitObjectsRequest_ebrs30_2.xml",
    "iti42/ipf__SubmitObjectsRequest_ebrs3_extra_metadata.xml",
)
ITI41_SUBMIT_SAMPLES = (
    "iti41/ihe__ProvideAndRegisterDocumentSet-bRequest.xml",
    "iti41/ihe__ProvideAndRegisterDocumentSet-bRequest_SOAP.xml",
    "iti41/nist-validator__pnr.xml",
    "iti41/nist-validator__pnr-limited.xml",
    "iti41/nist-validator__pnr-assoc-to-self.xml",
    "iti41/nist-validator__pnr-bad-uplink.xml",
    "iti41/nist-validator__soap-pnr.xml",
)
SUBMIT_SAMPLES = ITI42_SUBMIT_SAMPLES + ITI41_SUBMIT_SAMPLES

_SOAP12 = "{http://www.w3.org/2003/05/soap-envelope}"
_LCM_SOR = "{%s}SubmitObjectsRequest" % C.NS_LCM


def submit_element(rel: str) -> etree._Element:
    """The lcm:SubmitObjectsRequest of a sample under ../shared/samples (skips when absent): the
    body itself, the SOAP Body child, or the one inside xdsb:ProvideAndRegisterDocumentSetRequest."""
    parser = etree.XMLParser(resolve_entities=False, no_network=True)
    root = etree.parse(str(need_shared("samples", rel)), parser).getroot()
    if root.tag == _SOAP12 + "Envelope":
        root = next(c for c in root.find(_SOAP12 + "Body") if isinstance(c.tag, str))
    if root.tag == _LCM_SOR:
        return root
    assert root.tag == "{%s}ProvideAndRegisterDocumentSetRequest" % C.NS_XDSB, root.tag
    return root.find(_LCM_SOR)
