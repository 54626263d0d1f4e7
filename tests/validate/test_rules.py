"""validate_submission: the valid builder passes; one mutation per rule gives exactly that rule's
error (code, rule id, location); relaxing turns errors into logged warnings."""

from __future__ import annotations

import logging
from typing import Callable

import attrs
import pytest

from registry import constants as C
from registry.errors import XdsErrorCode
from registry.model import Association, Classification, LocalizedString, Slot
from registry.validate import RULES, ValidationConfig, external_targets, submission_patient_id, validate_submission
from registry.validate.rules import DE_CODES, DE_EXT_IDS, DE_SLOTS, FOL_CODES, FOL_EXT_IDS, FOL_SLOTS, SS_CODES, SS_EXT_IDS, SS_SLOTS

from validate import builders as B

META = XdsErrorCode.XDSRegistryMetadataError
OLD = "urn:uuid:0b1d4a4e-5b8c-4f3e-9a57-2f0c1a2b3c4d"
OTHER_PATIENT = "999^^^&1.2.250.1.213.1.4.10&ISO"
UNKNOWN_SCHEME = "urn:uuid:00000000-0000-4000-8000-000000000000"


@attrs.frozen
class Case:
    rule: str
    build: Callable
    location: str
    also: frozenset[str] = frozenset()


def de_case(rule, edit, location, also=()):
    return Case(rule, lambda: B.submission(de=edit(B.document_entry())), location, frozenset(also))


def ss_case(rule, edit, location, also=()):
    return Case(rule, lambda: B.submission(ss=edit(B.submission_set())), location, frozenset(also))


def fol_case(rule, edit, location, also=()):
    return Case(rule, lambda: B.submission(fol=edit(B.folder())), location, frozenset(also))


def extra_case(rule, objs, location, also=()):
    return Case(rule, lambda: B.submission(extra=objs()), location, frozenset(also))


def assocs_case(rule, edit, location, also=()):
    return Case(rule, lambda: B.submission(assocs=edit(B.associations())), location, frozenset(also))


OBJECTS = {
    "DE": (de_case, B.DE_ID, DE_CODES, DE_EXT_IDS, DE_SLOTS),
    "SS": (ss_case, B.SS_ID, SS_CODES, SS_EXT_IDS, SS_SLOTS),
    "FOL": (fol_case, B.FOL_ID, FOL_CODES, FOL_EXT_IDS, FOL_SLOTS),
}
DEFAULTS = {"DE": B.document_entry, "SS": B.submission_set, "FOL": B.folder}

BAD_VALUES = {
    "creationTime": "2024-01-02", "hash": "xyz", "languageCode": "en_US", "legalAuthenticator": "^^Claire",
    "repositoryUniqueId": "1.02.3", "serviceStartTime": "20241301", "serviceStopTime": "2024010", "size": "-1",
    "sourcePatientId": "IPP42", "URI": "not a uri", "submissionTime": "yesterday", "lastUpdateTime": "2024-01",
    "patientId": "123^^^1.2.3", "uniqueId": "1.2.3^" + "x" * 20, "sourceId": "abc",
    "sourcePatientInfo": "MARTIN^Claire",
}
GOOD_VALUES = {"URI": "http://example.org/doc", "lastUpdateTime": "20240101", "intendedRecipient": "Clinique|"}


def _first_code_cl(obj, scheme):
    return next(c for c in obj.classifications if c.classification_scheme == scheme)


def generated_cases() -> list[Case]:
    cases: list[Case] = []
    for prefix, (make, oid, codes, ext_ids, slots) in OBJECTS.items():
        for name, scheme, low, high in codes:
            if low:
                cases.append(make(f"{prefix}.{name}.required", lambda o, s=scheme: B.without_scheme(o, s), f"{oid}/{name}"))
            if high == 1:
                def dup(o, s=scheme):
                    c = _first_code_cl(o, s)
                    return B.add_classification(o, attrs.evolve(c, id=c.id + "-dup"))
                cases.append(make(f"{prefix}.{name}.multiple", dup, f"{oid}/{name}"))
            for suffix, over in (("code", {"node_representation": ""}), ("codingScheme", {"slots": ()}), ("displayName", {"name": ()})):
                def edit(o, s=scheme, over=over):
                    return B.map_classification(o, _first_code_cl(o, s).id, **over)
                cid = _first_code_cl(DEFAULTS[prefix](), scheme).id
                cases.append(make(f"{prefix}.{name}.{suffix}", edit, f"{oid}/{name}[{cid}]"))
        for name, scheme, _check in ext_ids:
            also = ("SUB.patientId.match",) if name == "patientId" and prefix != "SS" else ()
            cases.append(make(f"{prefix}.{name}.required", lambda o, s=scheme: B.without_ext(o, s), f"{oid}/{name}"))
            cases.append(make(
                f"{prefix}.{name}.multiple",
                lambda o, s=scheme: B.add_ext(o, attrs.evolve(next(e for e in o.external_identifiers if e.identification_scheme == s), id="ei-dup")),
                f"{oid}/{name}",
            ))
            ss_also = ("SUB.patientId.match",) if name == "patientId" and prefix == "SS" else ()
            cases.append(make(f"{prefix}.{name}.format", lambda o, s=scheme, n=name: B.with_ext(o, s, BAD_VALUES[n]), f"{oid}/{name}", also + ss_also))
        for name, (check, single) in slots.items():
            value = GOOD_VALUES.get(name) or DEFAULTS[prefix]().slot(name)[0]
            if check:
                cases.append(make(f"{prefix}.{name}.format", lambda o, n=name: B.with_slot(o, n, BAD_VALUES[n]), f"{oid}/{name}"))
            if single:
                cases.append(make(f"{prefix}.{name}.multiple", lambda o, n=name, v=value: B.with_slot(o, n, v, v), f"{oid}/{name}"))
        cases += [
            make(f"{prefix}.classification.unknown",
                 lambda o: B.add_classification(o, B.code("cl-x", o.id, UNKNOWN_SCHEME, "x")), f"{oid}/cl-x"),
            make(f"{prefix}.classification.classifiedObject",
                 lambda o: B.add_classification(o, Classification(id="cl-x", classified_object="as-ss-doc",
                                                                  classification_node=C.FOLDER_CLASSIFICATION_NODE if o.id == B.FOL_ID else C.SS_CLASSIFICATION_NODE))
                 if o.id != B.DE_ID else B.map_classification(o, "cl-event", classified_object=B.SS_ID),
                 f"{oid}/{'cl-event' if prefix == 'DE' else 'cl-x'}"),
            make(f"{prefix}.externalIdentifier.unknown",
                 lambda o: B.add_ext(o, B.ext("ei-x", o.id, UNKNOWN_SCHEME, "v")), f"{oid}/ei-x"),
            make(f"{prefix}.externalIdentifier.registryObject",
                 lambda o: B.add_ext(o, attrs.evolve(o.external_identifiers[0], id="ei-x", registry_object="as-ss-doc")),
                 f"{oid}/ei-x", (f"{prefix}.patientId.multiple",)),
            make(f"{prefix}.limitedMetadata",
                 lambda o, p=prefix: B.add_classification(o, Classification(id="cl-lm", classified_object=o.id, classification_node={
                     "DE": C.DE_LIMITED_METADATA, "SS": C.SS_LIMITED_METADATA, "FOL": C.FOLDER_LIMITED_METADATA}[p])),
                 f"{oid}/limitedMetadata"),
            make(f"{prefix}.slot.unknown", lambda o: B.add_slot(o, "comments", "x"), f"{oid}/comments"),
        ]
    for slot in ("creationTime", "languageCode", "sourcePatientId", "hash", "size", "repositoryUniqueId"):
        cases.append(de_case(f"DE.{slot}.required", lambda o, s=slot: B.without_slot(o, s), f"Document01/{slot}"))
    for prefix, scheme in (("DE", C.DE_AUTHOR), ("SS", C.SS_AUTHOR)):
        make, oid = OBJECTS[prefix][0], OBJECTS[prefix][1]
        cid = "cl-author" if prefix == "DE" else "cl-ss-author"

        def with_author(**slots):
            return lambda o, s=scheme, c=cid: B.add_classification(B.without_classification(o, c), B.author(c, o.id, s, **slots))

        cases += [
            make(f"{prefix}.author.empty", with_author(authorPerson=None, authorInstitution=None, authorTelecommunication=None), f"{oid}/author[{cid}]"),
            make(f"{prefix}.author.authorPerson.multiple", with_author(authorPerson=("1^A", "2^B")), f"{oid}/author[{cid}]"),
            make(f"{prefix}.author.authorPerson.format", with_author(authorPerson=("^^Claire",)), f"{oid}/author[{cid}]/authorPerson"),
            make(f"{prefix}.author.authorInstitution.format", with_author(authorInstitution=("^^^^^&1.2&ISO",)), f"{oid}/author[{cid}]/authorInstitution"),
            make(f"{prefix}.author.authorTelecommunication.format", with_author(authorTelecommunication=("^^Internet^",)), f"{oid}/author[{cid}]/authorTelecommunication"),
        ]
    return cases


def second_submission_set():
    s = "SubmissionSet02"
    ss = B.submission_set(id=s)
    return attrs.evolve(
        ss,
        classifications=tuple(attrs.evolve(c, id=c.id + "-2", classified_object=s) for c in ss.classifications),
        external_identifiers=tuple(
            attrs.evolve(e, id=e.id + "-2", registry_object=s, value=e.value + ".2" if e.identification_scheme == C.SS_UNIQUE_ID else e.value)
            for e in ss.external_identifiers
        ),
    )


def documented(assoc_type: str, *, coding_scheme: bool = True, aid: str = "as-rel"):
    doc = Classification(
        id="cl-doc", classified_object=aid, classification_scheme=C.ASSOC_DOCUMENTATION, node_representation="Corrected",
        name=(LocalizedString("Corrected"),), slots=(Slot("codingScheme", ("1.2.3",)),) if coding_scheme else (),
    )
    return Association(id=aid, association_type=assoc_type, source_object=B.DE_ID, target_object=OLD, classifications=(doc,))


def replace_assoc(assocs, aid, **over):
    return tuple(attrs.evolve(a, **over) if a.id == aid else a for a in assocs)


HAND_CASES = [
    de_case("DE.mimeType.required", lambda o: attrs.evolve(o, mime_type=None), "Document01/mimeType"),
    de_case("DE.mimeType.format", lambda o: attrs.evolve(o, mime_type="textxml"), "Document01/mimeType"),
    de_case("DE.objectType", lambda o: attrs.evolve(o, object_type=C.OBJECT_TYPE_REGISTRY_PACKAGE), "Document01/objectType"),
    de_case("DE.hash.onDemand", lambda o: B.without_slot(attrs.evolve(o, object_type=C.DOC_ENTRY_ON_DEMAND), "size"), "Document01/hash"),
    de_case("DE.size.onDemand", lambda o: B.without_slot(attrs.evolve(o, object_type=C.DOC_ENTRY_ON_DEMAND), "hash"), "Document01/size"),
    ss_case("SS.submissionTime.required", lambda o: B.without_slot(o, "submissionTime"), "SubmissionSet01/submissionTime"),
    fol_case("FOL.title.required", lambda o: attrs.evolve(o, name=()), "Folder01/title"),
    de_case("DE.title.length", lambda o: attrs.evolve(o, name=(LocalizedString("x" * 129),)), "Document01/title"),
    extra_case("SUB.submissionSet.count", lambda: (second_submission_set(),), "SubmitObjectsRequest"),
    fol_case("SUB.id.unique", lambda o: B.map_classification(o, "cl-fol-code", id="cl-class"), "cl-class"),
    de_case("SUB.id.uuid", lambda o: B.map_classification(o, "cl-event", id="urn:uuid:1234"), "urn:uuid:1234"),
    de_case("SUB.reference.dangling", lambda o: B.map_classification(o, "cl-event", classified_object="Document011"),
            "Document01/cl-event", ("DE.classification.classifiedObject",)),
    Case("SUB.empty", lambda: attrs.evolve(B.submission(), objects=(B.submission_set(),)), "SubmissionSet01"),
    assocs_case("SUB.hasMember.missing", lambda a: tuple(x for x in a if x.id != "as-ss-fol"), "Folder01"),
    fol_case("SUB.uniqueId.duplicate", lambda o: B.with_ext(o, C.FOLDER_UNIQUE_ID, "1.2.250.1.999.5.1"), "Folder01/uniqueId"),
    de_case("SUB.patientId.match", lambda o: B.with_ext(o, C.DE_PATIENT_ID, OTHER_PATIENT), "Document01/patientId"),
    extra_case("ASSOC.type.unknown", lambda: (Association(id="as-x", association_type="urn:acme:Likes", source_object=B.DE_ID, target_object=OLD),),
               "as-x/associationType"),
    assocs_case("ASSOC.self", lambda a: replace_assoc(a, "as-ss-fol", target_object="as-ss-fol"), "as-ss-fol", ("SUB.hasMember.missing",)),
    extra_case("ASSOC.hasMember.source", lambda: (B.has_member("as-x", B.DE_ID, OLD, status=None), B.has_member("as-y", B.SS_ID, "as-x", status=None)),
               "as-x/sourceObject"),
    extra_case("ASSOC.hasMember.target", lambda: (B.has_member("as-x", B.SS_ID, "as-ss-doc", status=None),), "as-x/targetObject"),
    assocs_case("ASSOC.hasMember.submissionSetStatus", lambda a: replace_assoc(a, "as-ss-doc", slots=()),
                "as-ss-doc/SubmissionSetStatus"),
    extra_case("ASSOC.hasMember.original", lambda: (B.has_member("as-x", B.SS_ID, OLD, status="Original"),),
               "as-x/SubmissionSetStatus"),
    assocs_case("ASSOC.hasMember.reference", lambda a: replace_assoc(a, "as-ss-doc", slots=(Slot(C.SLOT_SUBMISSION_SET_STATUS, ("Reference",)),)),
                "as-ss-doc/SubmissionSetStatus"),
    assocs_case("ASSOC.hasMember.folderMembership", lambda a: tuple(x for x in a if x.id != "as-ss-foldoc"), "as-fol-doc"),
    extra_case("ASSOC.relationship.source", lambda: (Association(id="as-x", association_type=C.ASSOC_RPLC, source_object=B.FOL_ID, target_object=OLD),),
               "as-x/sourceObject"),
    extra_case("ASSOC.relationship.target", lambda: (Association(id="as-x", association_type=C.ASSOC_APND, source_object=B.DE_ID, target_object=B.FOL_ID),),
               "as-x/targetObject"),
    assocs_case("ASSOC.documentation.notAllowed",
                lambda a: replace_assoc(a, "as-ss-doc", classifications=documented(C.ASSOC_RPLC, aid="as-ss-doc").classifications), "as-ss-doc/cl-doc"),
    extra_case("ASSOC.documentation.code", lambda: (documented(C.ASSOC_RPLC, coding_scheme=False),), "as-rel/cl-doc"),
]

CASES = generated_cases() + HAND_CASES


def test_valid_submission_has_no_findings():
    assert validate_submission(B.submission()) == []


def test_every_rule_has_a_mutation():
    assert set(RULES) - {c.rule for c in CASES} == set()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.rule + "@" + c.location)
def test_one_mutation_per_rule(case: Case):
    findings = validate_submission(case.build())
    fired = [f for f in findings if f.rule == case.rule]
    assert fired, f"{case.rule} did not fire: {[(f.rule, f.location) for f in findings]}"
    assert {f.rule for f in findings} <= {case.rule} | case.also, [(f.rule, f.location) for f in findings]
    for f in fired:
        assert f.code == RULES[case.rule][0]
        assert f.is_error
    assert case.location in {f.location for f in fired}, [f.location for f in fired]


def test_codes_of_the_named_rules():
    assert RULES["SUB.patientId.match"][0] is XdsErrorCode.XDSPatientIdDoesNotMatch
    assert RULES["SUB.uniqueId.duplicate"][0] is XdsErrorCode.XDSRegistryDuplicateUniqueIdInMessage
    assert RULES["DE.classCode.required"][0] is META


def test_all_errors_are_collected():
    de = B.without_slot(B.without_scheme(B.document_entry(), C.DE_CLASS_CODE), "languageCode")
    rules = {f.rule for f in validate_submission(B.submission(de=de, ss=B.without_slot(B.submission_set(), "submissionTime")))}
    assert rules == {"DE.classCode.required", "DE.languageCode.required", "SS.submissionTime.required"}


# --- relaxing ---------------------------------------------------------------------------------


def test_relaxed_rule_becomes_logged_warning(caplog):
    req = B.submission(de=B.without_slot(B.document_entry(), "languageCode"))
    with caplog.at_level(logging.WARNING, logger="carnet.validate"):
        findings = validate_submission(req, ValidationConfig(relaxed=frozenset({"DE.languageCode"})))
    assert [(f.rule, f.severity, f.code) for f in findings] == [("DE.languageCode.required", C.SEVERITY_WARNING, META)]
    assert any("DE.languageCode.required" in r.getMessage() and "Document01/languageCode" in r.getMessage() for r in caplog.records)


@pytest.mark.parametrize("entry,relaxed", [
    ("DE.", True), ("DE", True), ("DE.languageCode.required", True), ("DE.languageCode", True),
    ("DE.lang", False), ("SS.", False), ("DE.languageCode.format", False),
])
def test_relax_by_prefix(entry, relaxed):
    req = B.submission(de=B.without_slot(B.document_entry(), "languageCode"))
    (finding,) = validate_submission(req, ValidationConfig(relaxed=frozenset({entry})))
    assert finding.is_error is not relaxed


def test_relaxing_keeps_other_rules_strict():
    de = B.without_slot(B.without_slot(B.document_entry(), "languageCode"), "creationTime")
    findings = validate_submission(B.submission(de=de), ValidationConfig(relaxed=frozenset({"DE.languageCode"})))
    assert {(f.rule, f.is_error) for f in findings} == {("DE.languageCode.required", False), ("DE.creationTime.required", True)}


# --- valid variations ---------------------------------------------------------------------------


def _valid(req, config=ValidationConfig()):
    findings = validate_submission(req, config)
    assert findings == [], [(f.rule, f.location, f.message) for f in findings]


def test_documented_replacement_is_valid():
    _valid(B.submission(extra=(documented(C.ASSOC_RPLC),)))


@pytest.mark.parametrize("assoc_type", [C.ASSOC_APND, C.ASSOC_XFRM, C.ASSOC_XFRM_RPLC, C.ASSOC_IS_SNAPSHOT_OF])
def test_relationships_to_existing_entries_are_valid(assoc_type):
    _valid(B.submission(extra=(Association(id="as-x", association_type=assoc_type, source_object=B.DE_ID, target_object=OLD),)))


def test_signs_the_submission_set_is_valid():
    _valid(B.submission(extra=(Association(id="as-x", association_type=C.ASSOC_SIGNS, source_object=B.DE_ID, target_object=B.SS_ID),)))


def test_reference_to_existing_document_and_existing_folder_is_valid():
    extra = (
        B.has_member("as-ref", B.SS_ID, OLD, status="Reference"),
        B.has_member("as-ofol", "urn:uuid:7d1bd54b-6f51-4fa8-b6a6-5d1b6a2d1f00", B.DE_ID, status=None),
        B.has_member("as-ss-ofol", B.SS_ID, "as-ofol", status=None),
    )
    req = B.submission(extra=extra)
    _valid(req)
    assert set(external_targets(req)) == {OLD, "urn:uuid:7d1bd54b-6f51-4fa8-b6a6-5d1b6a2d1f00"}
    assert submission_patient_id(req) == B.PATIENT


def test_short_has_member_form_is_read_as_urn():
    _valid(B.submission(assocs=tuple(attrs.evolve(a, association_type="HasMember") for a in B.associations())))


def test_on_demand_entry_without_hash_size_creation_time_is_valid():
    de = B.document_entry(object_type=C.DOC_ENTRY_ON_DEMAND)
    for name in ("hash", "size", "creationTime"):
        de = B.without_slot(de, name)
    _valid(B.submission(de=de))


def test_iti41_makes_hash_size_repository_optional():
    de = B.document_entry()
    for name in ("hash", "size", "repositoryUniqueId"):
        de = B.without_slot(de, name)
    _valid(B.submission(de=de), ValidationConfig(transaction="ITI-41"))
    assert {f.rule for f in validate_submission(B.submission(de=de))} == {
        "DE.hash.required", "DE.size.required", "DE.repositoryUniqueId.required"}


def test_extra_metadata_is_accepted_and_urn_ihe_is_not():
    _valid(B.submission(de=B.add_slot(B.document_entry(), "urn:acme:local:flag", "1"),
                        ss=B.add_slot(B.submission_set(), "urn:acme:x", "1"), fol=B.add_slot(B.folder(), "urn:acme:y", "2")))
    (f,) = validate_submission(B.submission(de=B.add_slot(B.document_entry(), "urn:ihe:iti:xds:2099:made-up", "1")))
    assert (f.rule, f.location) == ("DE.slot.unknown", "Document01/urn:ihe:iti:xds:2099:made-up")


def test_dmp_ins_with_identifier_type_is_valid():
    ins = "2750212345678^^^&1.2.250.1.213.1.4.8&ISO^NH"
    _valid(B.submission(
        de=B.with_ext(B.document_entry(), C.DE_PATIENT_ID, ins),
        ss=B.with_ext(B.submission_set(), C.SS_PATIENT_ID, ins),
        fol=B.with_ext(B.folder(), C.FOLDER_PATIENT_ID, ins),
    ))


def test_empty_folder_is_valid():
    assocs = tuple(a for a in B.associations() if a.id in ("as-ss-doc", "as-ss-fol"))
    _valid(B.submission(assocs=assocs))
