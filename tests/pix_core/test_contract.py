"""The CrossReferences port contract (pix/xref.py), on the in-memory fake and on the SQL
adapter over SQLite and PostgreSQL: the same tests, the same answers."""

from __future__ import annotations

import pytest

from pix import ins
from pix.ins import with_key
from pix.xref import (
    Demographics,
    Identifier,
    InvalidIdentifier,
    PatientRecord,
    UnknownDomain,
    UnknownIdentifier,
)

from pix_core.backends import HOSP_A, HOSP_B

UNKNOWN = "1.2.250.1.999.9.9"

INS_1 = Identifier(with_key("1850275123001"), ins.INS_NIR_TEST, "ASIP-SANTE-INS-NIR", "INS")
INS_2 = Identifier(with_key("2910269045002"), ins.INS_NIR_TEST, "ASIP-SANTE-INS-NIR", "INS")
NIA_1 = Identifier(with_key("7850299123003"), ins.INS_NIA, "ASIP-SANTE-INS-NIA", "INS")


def ipp(value: str, domain: str = HOSP_A) -> Identifier:
    return Identifier(value, domain, "HOSP", "PI")


def rec(*identifiers: Identifier, vali: bool = True, name: str = "DUPONT") -> PatientRecord:
    return PatientRecord(
        identifiers=identifiers,
        demographics=Demographics(family_name=name, given_names=("JEAN",), birth_date="19850215", sex="M"),
        identity_reliability=("VALI",) if vali else ("PROV",),
    )


def groups_as_sets(change) -> list[set]:
    return [set(g) for g in change.groups]


def test_known_domains_are_the_configured_ones_and_the_accepted_ins(xref):
    assert xref.known_domains() == {HOSP_A, HOSP_B, ins.INS_NIR_TEST, ins.INS_NIA}


def test_feed_cross_references_a_local_id_and_the_ins(xref):
    change = xref.feed(rec(ipp("IPP1"), INS_1))
    assert groups_as_sets(change) == [{ipp("IPP1"), INS_1}]
    assert change.registered == (INS_1.xds_cx(),)
    assert xref.query(ipp("IPP1")) == (INS_1,)
    assert xref.query(INS_1) == (ipp("IPP1"),)
    assert xref.is_known(INS_1.xds_cx())
    assert not xref.is_known(ipp("IPP1").xds_cx())  # only the affinity domain's ids


def test_two_hospitals_meet_on_the_ins(xref):
    xref.feed(rec(ipp("IPP1"), INS_1))
    change = xref.feed(rec(ipp("B-77", HOSP_B), INS_1))
    assert groups_as_sets(change) == [{ipp("IPP1"), ipp("B-77", HOSP_B), INS_1}]
    assert change.registered == ()  # already known
    assert set(xref.query(ipp("IPP1"))) == {INS_1, ipp("B-77", HOSP_B)}
    # QPD-4 restricts the answer to the domains asked for
    assert xref.query(ipp("IPP1"), [HOSP_B]) == (ipp("B-77", HOSP_B),)
    assert xref.query(ipp("IPP1"), [ins.INS_NIR_TEST]) == (INS_1,)
    assert xref.query(ipp("IPP1"), [HOSP_A]) == ()  # never the queried identifier itself


def test_a_lone_identifier_is_the_nf_case(xref):
    xref.feed(rec(ipp("IPP9")))
    assert xref.query(ipp("IPP9")) == ()


def test_feed_joins_existing_groups(xref):
    xref.feed(rec(ipp("IPP1")))
    xref.feed(rec(ipp("B-1", HOSP_B)))
    change = xref.feed(rec(ipp("IPP1"), ipp("B-1", HOSP_B), INS_1))
    assert groups_as_sets(change) == [{ipp("IPP1"), ipp("B-1", HOSP_B), INS_1}]
    assert set(xref.query(ipp("B-1", HOSP_B))) == {ipp("IPP1"), INS_1}


def test_linking_is_transitive_without_an_ins(xref):
    xref.feed(rec(ipp("IPP1"), ipp("B-1", HOSP_B)))
    xref.feed(rec(ipp("IPP1"), INS_1))
    assert set(xref.query(INS_1)) == {ipp("IPP1"), ipp("B-1", HOSP_B)}


def test_the_ins_is_the_anchor_an_identifier_fed_with_another_ins_moves(xref):
    xref.feed(rec(ipp("IPP1"), ipp("B-1", HOSP_B), INS_1))
    change = xref.feed(rec(ipp("IPP1"), INS_2))
    assert groups_as_sets(change) == [{ipp("IPP1"), INS_2}, {ipp("B-1", HOSP_B), INS_1}]
    assert xref.query(ipp("IPP1")) == (INS_2,)
    assert xref.query(INS_1) == (ipp("B-1", HOSP_B),)
    # and a group holding two INS of one authority never forms
    change = xref.feed(rec(ipp("B-1", HOSP_B), INS_2))
    assert set(xref.query(INS_2)) == {ipp("IPP1"), ipp("B-1", HOSP_B)}
    assert xref.query(INS_1) == ()


def test_refeeding_is_idempotent_and_keeps_the_latest_demographics(xref):
    first = xref.feed(rec(ipp("IPP1"), INS_1, name="DUPONT"))
    again = xref.feed(rec(ipp("IPP1"), INS_1, name="DURAND"))
    assert groups_as_sets(first) == groups_as_sets(again)
    assert xref.demographics(ipp("IPP1")).family_name == "DURAND"
    assert xref.demographics(INS_1).given_names == ("JEAN",)


def test_duplicates_in_one_record_count_once(xref):
    change = xref.feed(rec(ipp("IPP1"), ipp("IPP1"), INS_1))
    assert [len(g) for g in change.groups] == [2]


@pytest.mark.parametrize(
    "bad, error, code",
    [
        (Identifier("", HOSP_A), InvalidIdentifier, "101"),
        (Identifier("IPP2", ""), InvalidIdentifier, "101"),
        (Identifier("IPP2", UNKNOWN), UnknownDomain, "204"),
        (Identifier(INS_2.value[:-1] + "0", ins.INS_NIR_TEST), InvalidIdentifier, "102"),  # key
        (Identifier(INS_2.value, ins.INS_NIR), InvalidIdentifier, "102"),  # OID not accepted
        (Identifier(INS_2.value, ins.INS_NIR_DEMO), InvalidIdentifier, "102"),
    ],
)
def test_a_bad_identifier_fails_the_feed_and_stores_nothing(xref, bad, error, code):
    with pytest.raises(error) as info:
        xref.feed(rec(ipp("IPP2"), bad))
    assert info.value.location == "PID-3"
    assert info.value.hl7_code == code
    with pytest.raises(UnknownIdentifier):
        xref.query(ipp("IPP2"))


def test_an_ins_without_a_qualified_identity_is_refused(xref):
    with pytest.raises(InvalidIdentifier, match="VALI"):
        xref.feed(rec(ipp("IPP2"), INS_2, vali=False))
    assert not xref.is_known(INS_2.xds_cx())
    with pytest.raises(UnknownIdentifier):
        xref.query(ipp("IPP2"))
    xref.feed(rec(ipp("IPP2"), vali=False))  # a provisional identity without INS is fine
    assert xref.query(ipp("IPP2")) == ()


def test_two_ins_of_one_authority_in_a_record_are_refused(xref):
    with pytest.raises(InvalidIdentifier):
        xref.feed(rec(ipp("IPP2"), INS_1, INS_2))
    # an INS-NIR and an INS-NIA together are fine
    xref.feed(rec(ipp("IPP2"), INS_1, NIA_1))
    assert set(xref.query(ipp("IPP2"))) == {INS_1, NIA_1}


def test_query_errors(xref):
    xref.feed(rec(ipp("IPP1"), INS_1))
    with pytest.raises(UnknownIdentifier) as info:
        xref.query(ipp("NOPE"))
    assert (info.value.location, info.value.hl7_code) == ("QPD-3", "204")
    with pytest.raises(UnknownDomain) as info:
        xref.query(Identifier("IPP1", UNKNOWN))
    assert (info.value.location, info.value.hl7_code) == ("QPD-3", "204")
    with pytest.raises(UnknownDomain) as info:
        xref.query(ipp("IPP1"), [HOSP_B, UNKNOWN])
    assert (info.value.location, info.value.hl7_code) == ("QPD-4", "204")
    with pytest.raises(InvalidIdentifier) as info:
        xref.query(Identifier("IPP1", ""))
    assert info.value.location == "QPD-3"


# --- merges (ITI TF-2a §3.8.4.2) -------------------------------------------------------------


def test_merge_of_local_ids_retires_the_subsumed_one(xref):
    xref.feed(rec(ipp("IPP1"), INS_1))
    xref.feed(rec(ipp("IPP2"), ipp("B-2", HOSP_B)))
    change = xref.merge(rec(ipp("IPP1"), INS_1), ipp("IPP2"))
    assert groups_as_sets(change) == [{ipp("IPP1"), INS_1, ipp("B-2", HOSP_B)}]
    assert change.retired == ()
    with pytest.raises(UnknownIdentifier):
        xref.query(ipp("IPP2"))
    assert set(xref.query(ipp("B-2", HOSP_B))) == {ipp("IPP1"), INS_1}
    assert xref.status(ipp("IPP2")) == "merged"
    assert xref.is_known(INS_1.xds_cx())


def test_merge_of_two_ins_retires_the_subsumed_ins_in_the_registry(xref):
    xref.feed(rec(ipp("IPP1"), INS_1))
    xref.feed(rec(ipp("B-2", HOSP_B), INS_2))
    change = xref.merge(rec(INS_2), INS_1)
    assert change.retired == (INS_1.xds_cx(),)
    assert groups_as_sets(change) == [{INS_2, ipp("B-2", HOSP_B), ipp("IPP1")}]
    assert not xref.is_known(INS_1.xds_cx())
    assert xref.is_known(INS_2.xds_cx())
    with pytest.raises(UnknownIdentifier):
        xref.query(INS_1)
    assert set(xref.query(ipp("IPP1"))) == {INS_2, ipp("B-2", HOSP_B)}


def test_a_nia_merged_into_the_nir(xref):
    xref.feed(rec(ipp("IPP1"), NIA_1))
    change = xref.merge(rec(ipp("IPP1"), INS_1), NIA_1)
    assert change.registered == (INS_1.xds_cx(),)
    assert change.retired == (NIA_1.xds_cx(),)
    assert xref.query(ipp("IPP1")) == (INS_1,)
    assert not xref.is_known(NIA_1.xds_cx())


def test_merge_of_an_unknown_subsumed_id_still_applies_the_surviving_record(xref):
    change = xref.merge(rec(ipp("IPP1"), INS_1), ipp("NEVER-SEEN"))
    assert groups_as_sets(change) == [{ipp("IPP1"), INS_1}]
    with pytest.raises(UnknownIdentifier):
        xref.query(ipp("NEVER-SEEN"))


def test_merge_keeps_a_conflicting_ins_group_apart(xref):
    xref.feed(rec(ipp("IPP1"), INS_1))
    xref.feed(rec(ipp("IPP2"), ipp("B-2", HOSP_B), INS_2))
    change = xref.merge(rec(ipp("IPP1")), ipp("IPP2"))
    # IPP2 is retired; its group keeps INS_2, which cannot join INS_1's person
    assert groups_as_sets(change) == [{ipp("IPP1"), INS_1}, {ipp("B-2", HOSP_B), INS_2}]


@pytest.mark.parametrize(
    "subsumed, error, location",
    [
        (Identifier("IPP2", ""), InvalidIdentifier, "MRG-1"),
        (Identifier("IPP2", UNKNOWN), UnknownDomain, "MRG-1"),
        (ipp("IPP1"), InvalidIdentifier, "MRG-1"),  # into itself
    ],
)
def test_a_bad_merge_stores_nothing(xref, subsumed, error, location):
    xref.feed(rec(ipp("IPP2")))
    with pytest.raises(error) as info:
        xref.merge(rec(ipp("IPP1"), INS_1), subsumed)
    assert info.value.location == location
    with pytest.raises(UnknownIdentifier):
        xref.query(ipp("IPP1"))
    assert xref.query(ipp("IPP2")) == ()
    assert not xref.is_known(INS_1.xds_cx())


def test_a_merged_id_fed_again_is_a_new_active_identity(xref):
    xref.feed(rec(ipp("IPP1")))
    xref.feed(rec(ipp("IPP2")))
    xref.merge(rec(ipp("IPP1")), ipp("IPP2"))
    xref.feed(rec(ipp("IPP2"), ipp("B-5", HOSP_B)))
    assert xref.query(ipp("IPP2")) == (ipp("B-5", HOSP_B),)
    assert xref.query(ipp("IPP1")) == ()
