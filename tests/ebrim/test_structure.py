"""Structure checks of the parser: one valid message plus one mutation → the exact error."""

from __future__ import annotations

import pytest
from lxml import etree

from registry import constants as C
from registry import ebrim
from registry import model as M
from registry.errors import XdsErrorCode, XdsFailure

P = etree.XMLParser(resolve_entities=False, no_network=True)
NS = f'xmlns:lcm="{C.NS_LCM}" xmlns:rim="{C.NS_RIM}" xmlns:rs="{C.NS_RS}"'

DOC = f"""<rim:ExtrinsicObject xmlns:rim="{C.NS_RIM}" id="Doc1" mimeType="text/plain" isOpaque="0"
    objectType="{C.DOC_ENTRY_STABLE}" status="{C.STATUS_APPROVED}" lid="urn:uuid:l" home="urn:oid:1.2">
  <!-- a comment is ignored -->
  <rim:Slot name="creationTime" slotType="x"><rim:ValueList><rim:Value>2024<!--c-->0101</rim:Value><rim:Value/></rim:ValueList></rim:Slot>
  <rim:Name><rim:LocalizedString xml:lang="fr-FR" charset="UTF-8" value="Compte rendu é"/></rim:Name>
  <rim:VersionInfo versionName="2" comment="c"/>
  <rim:Classification id="c1" classifiedObject="Doc1" classificationScheme="{C.DE_CLASS_CODE}" nodeRepresentation="10">
    <rim:Slot name="codingScheme"><rim:ValueList><rim:Value>1.2.250.1.213.1.1.5.6</rim:Value></rim:ValueList></rim:Slot>
    <rim:Name><rim:LocalizedString value="Compte rendu"/></rim:Name>
  </rim:Classification>
  <rim:ExternalIdentifier id="e1" registryObject="Doc1" identificationScheme="{C.DE_UNIQUE_ID}" value="1.2.3"/>
  <rim:ContentVersionInfo versionName="1"/>
</rim:ExtrinsicObject>"""


def doc_el() -> etree._Element:
    return etree.fromstring(DOC, P)


def test_document_entry_details():
    de = ebrim.element_to_object(doc_el())
    assert isinstance(de, M.DocumentEntry)
    assert (de.id, de.mime_type, de.is_opaque, de.lid, de.home) == ("Doc1", "text/plain", False, "urn:uuid:l", "urn:oid:1.2")
    assert de.slots == (M.Slot("creationTime", ("20240101", ""), "x"),)
    assert de.name == (M.LocalizedString("Compte rendu é", "fr-FR", "UTF-8"),)
    assert (de.version_name, de.version_comment) == ("2", "c")
    assert (de.content_version_name, de.content_version_comment) == ("1", None)
    assert de.codes(C.DE_CLASS_CODE) == (M.Code("10", "1.2.250.1.213.1.1.5.6", "Compte rendu"),)
    assert de.unique_id == "1.2.3"
    frag = ebrim.object_to_bytes(de)
    assert b'isOpaque="false"' in frag and b'xml:lang="fr-FR"' in frag
    children = [etree.QName(c).localname for c in etree.fromstring(frag, P)]
    assert children == ["Slot", "Name", "VersionInfo", "Classification", "ExternalIdentifier", "ContentVersionInfo"]


def _fails(el, location: str | None = None, text: str | None = None):
    with pytest.raises(XdsFailure) as info:
        if el.tag == ebrim.T_SUBMIT_OBJECTS_REQUEST:
            ebrim.parse_submit_objects_request(el)
        else:
            ebrim.element_to_object(el)
    (err,) = info.value.errors
    assert err.code is XdsErrorCode.XDSRegistryMetadataError
    if location is not None:
        assert err.location == location
    if text is not None:
        assert text in err.message
    return err


def test_foreign_namespace_element_is_refused():
    el = doc_el()
    el.find(ebrim.T_CLASSIFICATION).append(etree.Element("{urn:other}Extra"))
    _fails(el, location="c1/Extra", text="unexpected element {urn:other}Extra")


def test_out_of_order_is_refused():
    el = doc_el()
    el.append(etree.Element(ebrim.T_SLOT, name="late"))
    _fails(el, text="out of order")


def test_repeated_name_is_refused():
    el = doc_el()
    el.find(ebrim.T_NAME).addnext(etree.Element(ebrim.T_NAME))
    _fails(el, text="repeated")


def test_unknown_attribute_is_refused_foreign_one_ignored():
    el = doc_el()
    el.set("{http://www.w3.org/2001/XMLSchema-instance}type", "x")
    assert ebrim.element_to_object(el).id == "Doc1"
    el.set("colour", "blue")
    _fails(el, location="Doc1", text="colour")


@pytest.mark.parametrize("attr", ["id", "classifiedObject"])
def test_missing_required_attribute(attr):
    el = doc_el()
    del el.find(ebrim.T_CLASSIFICATION).attrib[attr]
    _fails(el, text=attr)


def test_text_content_is_refused():
    el = doc_el()
    el.find(ebrim.T_NAME).text = "stray"
    _fails(el, location="Doc1/Name", text="text content")


def test_bad_boolean_is_refused():
    el = doc_el()
    el.set("isOpaque", "maybe")
    _fails(el, location="Doc1", text="isOpaque")


def test_slot_without_value_list_is_refused():
    el = doc_el()
    slot = el.find(ebrim.T_SLOT)
    slot.remove(slot[0])
    _fails(el, location="Doc1/Slot", text="ValueList")


def test_version_info_in_classification_is_refused():
    el = doc_el()
    el.find(ebrim.T_CLASSIFICATION).append(etree.Element(ebrim.T_VERSION_INFO))
    _fails(el, text="not supported")


def test_element_to_object_refuses_other_elements():
    _fails(etree.Element(ebrim.T_CLASSIFICATION, id="x", classifiedObject="y"), text="expected a rim registry object")


def request(body: str) -> etree._Element:
    return etree.fromstring(f"<lcm:SubmitObjectsRequest {NS}><rim:RegistryObjectList>{body}</rim:RegistryObjectList></lcm:SubmitObjectsRequest>", P)


def ss_class(pkg="SS1", cid="cl1", node=C.SS_CLASSIFICATION_NODE):
    return f'<rim:Classification id="{cid}" classifiedObject="{pkg}" classificationNode="{node}"/>'


def test_package_typed_by_nested_or_top_level_classification():
    nested = ebrim.parse_submit_objects_request(request(f'<rim:RegistryPackage id="SS1">{ss_class()}</rim:RegistryPackage>'))
    top = ebrim.parse_submit_objects_request(request(f'{ss_class()}<rim:RegistryPackage id="SS1"/>'))
    assert nested == top
    assert isinstance(top.objects[0], M.SubmissionSet)
    folder = ebrim.parse_submit_objects_request(
        request(f'<rim:RegistryPackage id="F1"/>{ss_class("F1", node=C.FOLDER_CLASSIFICATION_NODE)}')
    )
    assert isinstance(folder.objects[0], M.Folder)


def test_untyped_package_is_refused():
    _fails(request('<rim:RegistryPackage id="P1"/>'), location="P1", text="neither")


def test_package_typed_twice_is_refused():
    body = f'<rim:RegistryPackage id="P1">{ss_class("P1")}{ss_class("P1", "cl2", C.FOLDER_CLASSIFICATION_NODE)}</rim:RegistryPackage>'
    _fails(request(body), location="P1", text="both")


def test_top_level_classification_of_unknown_object_is_refused():
    body = f'<rim:RegistryPackage id="SS1">{ss_class()}</rim:RegistryPackage>{ss_class("Nope", "cl9")}'
    _fails(request(body), location="cl9", text="Nope")


def test_nested_registry_object_list_is_refused():
    body = f'<rim:RegistryPackage id="SS1">{ss_class()}<rim:RegistryObjectList/></rim:RegistryPackage>'
    _fails(request(body), text="HasMember")


def test_unsupported_object_in_list_is_refused():
    _fails(request('<rim:ExternalLink id="L1" externalURI="http://x"/>'), location="L1")


def test_object_ref_and_request_attributes():
    el = request('<rim:ObjectRef id="urn:uuid:1" home="urn:oid:9"/>')
    el.set("comment", "hello")
    req = ebrim.parse_submit_objects_request(el)
    assert req.object_refs == (M.ObjectRef("urn:uuid:1", "urn:oid:9"),)
    assert req.comment == "hello"


def test_wrong_root_is_refused():
    el = etree.fromstring(f"<lcm:UpdateObjectsRequest {NS}><rim:RegistryObjectList/></lcm:UpdateObjectsRequest>", P)
    with pytest.raises(XdsFailure) as info:
        ebrim.parse_submit_objects_request(el)
    assert info.value.errors[0].code is XdsErrorCode.XDSRegistryMetadataError


def test_missing_registry_object_list_is_refused():
    _fails(etree.fromstring(f"<lcm:SubmitObjectsRequest {NS}/>", P), text="RegistryObjectList")


def test_request_slots_round_trip():
    el = etree.fromstring(
        f"<lcm:SubmitObjectsRequest {NS}><rs:RequestSlotList><rim:Slot name='a'><rim:ValueList><rim:Value>1</rim:Value>"
        f"</rim:ValueList></rim:Slot></rs:RequestSlotList><rim:RegistryObjectList/></lcm:SubmitObjectsRequest>",
        P,
    )
    req = ebrim.parse_submit_objects_request(el)
    assert req.slots == (M.Slot("a", ("1",)),)
    assert ebrim.parse_submit_objects_request(ebrim.submit_objects_request_to_element(req)) == req


def test_with_status_and_replace_status_in_fragment():
    de = ebrim.element_to_object(doc_el())
    dep = ebrim.with_status(de, C.STATUS_DEPRECATED)
    assert dep.status == C.STATUS_DEPRECATED and de.status == C.STATUS_APPROVED
    frag = ebrim.replace_status_in_fragment(ebrim.object_to_bytes(de), C.STATUS_DEPRECATED)
    assert frag == ebrim.object_to_bytes(dep)
