"""The validator over the real SubmitObjectsRequests of ../shared/samples (through registry.ebrim),
and robustness properties over arbitrary models."""

from __future__ import annotations

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


@st.composite
def damaged_submissions(draw):
    """The valid builder with a random subset of its slots, classifications, external identifiers,
    objects and associations removed, and whether a required part was among them."""
    removed_required = False

    def drop(items):
        nonlocal removed_required
        keep = draw(st.lists(st.booleans(), min_size=len(items), max_size=len(items)))
        removed_required |= any(not k and _key(x) not in OPTIONAL for x, k in zip(items, keep))
        return tuple(x for x, k in zip(items, keep) if k)

    objects = []
    for obj in B.submission().objects:
        objects.append(attrs.evolve(
            obj,
            slots=drop(obj.slots),
            classifications=drop(obj.classifications),
            external_identifiers=drop(obj.external_identifiers),
        ))
    return attrs.evolve(B.submission(), objects=drop(objects)), removed_required


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
