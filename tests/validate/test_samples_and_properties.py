"""The validator over the real SubmitObjectsRequests of ../shared/samples (through registry.ebrim),
and robustness properties over arbitrary models."""

from __future__ import annotations

import itertools

import attrs
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from registry import constants as C
from registry.ebrim import parse_submit_objects_request
from registry.errors import XdsErrorCode
from registry.validate import RULES, ValidationConfig, validate_submission
from strategies_ebrim import ITI42_SUBMIT_SAMPLES, submit_element, submit_objects_requests
from validate import builders as B

META = XdsErrorCode.XDSRegistryMetadataError
# The IHE and IPF ITI-42 examples predate (or ignore) the registry-side requirement of
# ITI TF-3 Table 4.3.1-3 that stable entries carry hash, size and repositoryUniqueId.
REGISTRY_FILLED = frozenset({"DE.hash.required", "DE.size.required", "DE.repositoryUniqueId.required"})
ITI41_VALID = (
    "iti41/ihe__ProvideAndRegisterDocumentSet-bRequest.xml",
    "iti41/ihe__ProvideAndRegisterDocumentSet-bRequest_SOAP.xml",
    "iti41/nist-validator__pnr.xml",
    "iti41/nist-validator__soap-pnr.xml",
)


def _sample(rel: str):
    return parse_submit_objects_request(submit_element(rel))


@pytest.mark.parametrize("rel", ITI42_SUBMIT_SAMPLES)
def test_iti42_samples_validate(rel):
    findings = validate_submission(_sample(rel), ValidationConfig(relaxed=REGISTRY_FILLED))
    assert [f for f in findings if f.is_error] == []
    assert {f.rule for f in findings} == REGISTRY_FILLED  # strict ITI-42: exactly these are missing


@pytest.mark.parametrize("rel", ITI41_VALID)
def test_iti41_samples_validate(rel):
    assert validate_submission(_sample(rel), ValidationConfig(transaction="ITI-41")) == []


def test_assoc_to_self_sample():
    findings = validate_submission(_sample("iti41/nist-validator__pnr-assoc-to-self.xml"), ValidationConfig(transaction="ITI-41"))
    assert {(f.rule, f.location, f.code) for f in findings} == {
        ("ASSOC.self", "ID_6144893_1", META),
        ("SUB.hasMember.missing", "Document01", META),
    }


def test_bad_uplink_sample():
    findings = validate_submission(_sample("iti41/nist-validator__pnr-bad-uplink.xml"), ValidationConfig(transaction="ITI-41"))
    assert ("SUB.reference.dangling", "Document01/id_2", META) in {(f.rule, f.location, f.code) for f in findings}
    assert all(f.code is META and f.location.startswith("Document01/id_2") for f in findings)


def test_limited_metadata_sample_is_rejected_by_xds():
    # NIST's XDR Limited Metadata example: valid for XDR, not for an XDS registry (ITI TF-3 §4.1.1).
    findings = validate_submission(_sample("iti41/nist-validator__pnr-limited.xml"), ValidationConfig(transaction="ITI-41"))
    rules = {f.rule for f in findings}
    assert {"DE.limitedMetadata", "SS.limitedMetadata"} <= rules
    assert all(f.code is META for f in findings)


# --- properties ---------------------------------------------------------------------------------


def _check_findings(findings):
    for f in findings:
        assert f.rule in RULES and f.code is RULES[f.rule][0] and f.location


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(submit_objects_requests, st.sampled_from(["ITI-42", "ITI-41"]))
def test_validate_never_raises_on_arbitrary_models(req, transaction):
    _check_findings(validate_submission(req, ValidationConfig(transaction=transaction)))


OPTIONAL = {  # ITI TF-3 Table 4.3.1-3: R2/O parts of the builder's submission
    "serviceStartTime", "serviceStopTime", "sourcePatientInfo", "legalAuthenticator",
    "urn:ihe:iti:xds:2013:referenceIdList", "cl-author", "cl-event", "cl-ss-author", "cl-ss-node", "cl-fol-node",
}


def _key(x) -> str:
    return getattr(x, "name", None) if hasattr(x, "values") else x.id


# The builder's associations and what each one links (ITI TF-3 §4.2.2).
_ENDS = {
    "as-ss-doc": (B.SS_ID, B.DE_ID), "as-ss-fol": (B.SS_ID, B.FOL_ID),
    "as-fol-doc": (B.FOL_ID, B.DE_ID), "as-ss-foldoc": (B.SS_ID, "as-fol-doc"),
}


def _whole(kept: set[str]) -> bool:
    """Whether the builder's submission reduced to the objects `kept` is still a whole one: the
    SubmissionSet and something submitted in it (ITI TF-3 §4.1.4), every DocumentEntry and Folder a
    member of the SubmissionSet, every association's ends present, and a Folder→DocumentEntry
    HasMember itself a member of the SubmissionSet (§4.1.9.2). Removing the DocumentEntry together
    with every association that names it leaves a valid submission of a new Folder."""
    if B.SS_ID not in kept or not kept & {B.DE_ID, B.FOL_ID}:
        return False
    if (B.DE_ID in kept and "as-ss-doc" not in kept) or (B.FOL_ID in kept and "as-ss-fol" not in kept):
        return False
    if any(a in kept and not set(ends) <= kept for a, ends in _ENDS.items()):
        return False
    return not ("as-fol-doc" in kept and "as-ss-foldoc" not in kept)


def test_the_oracle_of_whole_submissions_agrees_with_the_validator_on_every_subset():
    objects = B.submission().objects
    for mask in itertools.product((False, True), repeat=len(objects)):
        kept = tuple(o for o, k in zip(objects, mask) if k)
        valid = not validate_submission(attrs.evolve(B.submission(), objects=kept))
        assert valid == _whole({o.id for o in kept}), sorted(o.id for o in kept)


@st.composite
def damaged_submissions(draw):
    """The valid builder with a random subset of its objects removed, and of the slots,
    classifications and external identifiers of those kept; and whether what is left lacks a
    required part (a removed object: `_whole`; a removed part of a kept object: not in OPTIONAL)."""
    base = B.submission().objects
    keep = draw(st.lists(st.booleans(), min_size=len(base), max_size=len(base)))
    removed_required = not _whole({o.id for o, k in zip(base, keep) if k})

    def drop(items):
        nonlocal removed_required
        keep = draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
        removed_required |= any(not k and _key(x) not in OPTIONAL for x, k in zip(items, keep))
        return tuple(x for x, k in zip(items, keep) if k)

    objects = [
        attrs.evolve(
            obj,
            slots=drop(obj.slots),
            classifications=drop(obj.classifications),
            external_identifiers=drop(obj.external_identifiers),
        )
        for obj, k in zip(base, keep) if k
    ]
    return attrs.evolve(B.submission(), objects=tuple(objects)), removed_required


@settings(max_examples=300)
@given(damaged_submissions())
def test_removing_required_parts_is_always_reported(damaged):
    req, removed_required = damaged
    findings = validate_submission(req)
    _check_findings(findings)
    assert bool(findings) == removed_required, [(f.rule, f.location) for f in findings]


@given(st.frozensets(st.sampled_from(sorted(RULES)), max_size=20))
def test_relaxing_never_changes_what_is_found(relaxed):
    req = B.submission(de=B.without_slot(B.without_scheme(B.document_entry(), C.DE_CLASS_CODE), "languageCode"))
    strict = validate_submission(req)
    loose = validate_submission(req, ValidationConfig(relaxed=relaxed))
    assert [(f.rule, f.location) for f in strict] == [(f.rule, f.location) for f in loose]
    assert all(f.is_error == (f.rule not in relaxed) for f in loose)
