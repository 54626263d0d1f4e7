"""INS rules (pix/ins.py): NIR format and control key, INS OIDs, the qualified-identity rule."""

from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from pix import ins
from pix.ins import InsPolicy, check_nir, is_ins_oid, nir_key, with_key
from pix.xref import Identifier, InvalidIdentifier

# An ANS PAM-FR sample's INS-NIR-TEST (samples/iti8/ans__PAMFR_*.hl7, PID-3).
ANS_SAMPLE_NIR = "279035121518989"


def test_oids():
    assert ins.INS_NIR == "1.2.250.1.213.1.4.8"
    assert ins.INS_NIA == "1.2.250.1.213.1.4.9"
    assert ins.INS_NIR_TEST == "1.2.250.1.213.1.4.10"
    assert ins.INS_NIR_DEMO == "1.2.250.1.213.1.4.11"
    assert all(is_ins_oid(o) for o in ins.INS_OIDS)
    assert not is_ins_oid("1.2.250.1.213.1.4.1")
    assert not is_ins_oid("1.2.250.1.213.1.4.8.1")


def test_key_of_known_numbers():
    assert nir_key("2790351215189") == 89  # the ANS sample above
    check_nir(ANS_SAMPLE_NIR)
    # 97 − (1 mod 97) for the smallest number; 2A/2B substituted as 19/18
    assert nir_key("1850278006048") == 97 - 1850278006048 % 97
    assert nir_key("185022A006048") == 97 - 1850219006048 % 97
    assert nir_key("185022B006048") == 97 - 1850218006048 % 97
    assert nir_key("1850219006048") == nir_key("185022A006048")


@pytest.mark.parametrize(
    "value, fragment",
    [
        ("27903512151898", "15 characters"),
        ("2790351215189890", "15 characters"),
        ("579035121518989", "sex"),
        ("279135121518989", "month"),
        ("2790X5121518989", "digits"),
        ("27903512151898X", "digits"),
        ("2790351215189 9", "digits"),
        ("279035121518988", "does not match"),
        ("279035121518900", "outside 01-97"),
        ("279035121518998", "outside 01-97"),
        ("18502" "2a" "006048" "00", "digits"),  # lower-case Corsica is not a NIR
    ],
)
def test_check_nir_rejects_with_a_clear_message(value, fragment):
    with pytest.raises(InvalidIdentifier) as info:
        check_nir(value)
    assert fragment in str(info.value)
    assert info.value.location == "PID-3"
    assert info.value.hl7_code == "102"


def test_corsica_and_overseas_and_abroad_and_special_months():
    for nir13 in ("185022A006048", "285022B123001", "1850297101001", "2901299352123", "1782099123456",
                  "2794299123456", "7015099123456", "3011299123456"):
        check_nir(with_key(nir13))


def test_department_00_is_refused():
    with pytest.raises(InvalidIdentifier, match="department"):
        check_nir(with_key("1850200123456"))


def _policy_check(policy, identifier, reliability=("VALI",)):
    policy.check(identifier, reliability)


def test_policy_accepts_only_configured_oids():
    test_only = InsPolicy(frozenset({ins.INS_NIR_TEST}))
    _policy_check(test_only, Identifier(ANS_SAMPLE_NIR, ins.INS_NIR_TEST))
    with pytest.raises(InvalidIdentifier, match="not accepted"):
        _policy_check(test_only, Identifier(ANS_SAMPLE_NIR, ins.INS_NIR))
    production = InsPolicy()
    _policy_check(production, Identifier(ANS_SAMPLE_NIR, ins.INS_NIR))
    _policy_check(production, Identifier(ANS_SAMPLE_NIR, ins.INS_NIA))
    with pytest.raises(InvalidIdentifier, match="not accepted"):
        _policy_check(production, Identifier(ANS_SAMPLE_NIR, ins.INS_NIR_DEMO))
    with pytest.raises(ValueError):
        InsPolicy(frozenset({"1.2.3"}))


def test_policy_requires_a_qualified_identity():
    policy = InsPolicy(ins.TEST_OIDS)
    ident = Identifier(ANS_SAMPLE_NIR, ins.INS_NIR_TEST)
    for reliability in ((), ("PROV",), ("VIDE",), ("DOUTE",), ("FICTI",)):
        with pytest.raises(InvalidIdentifier, match="VALI"):
            _policy_check(policy, ident, reliability)
    _policy_check(policy, ident, ("VALI",))
    _policy_check(policy, ident, ("PROV", "VALI"))


def test_policy_checks_the_nir():
    policy = InsPolicy(ins.TEST_OIDS)
    with pytest.raises(InvalidIdentifier, match="control key"):
        _policy_check(policy, Identifier("279035121518988", ins.INS_NIR_TEST))


# --- property tests ---------------------------------------------------------------------------



@st.composite
def nir13(draw) -> str:
    sex = draw(st.sampled_from("123478"))
    year = draw(st.integers(0, 99))
    month = draw(st.one_of(st.integers(1, 12), st.integers(20, 42), st.integers(50, 99)))
    kind = draw(st.sampled_from(["metro", "corsica", "overseas", "abroad"]))
    if kind == "metro":
        place = f"{draw(st.integers(1, 95)):02d}{draw(st.integers(0, 999)):03d}"
    elif kind == "corsica":
        place = draw(st.sampled_from(["2A", "2B"])) + f"{draw(st.integers(1, 999)):03d}"
    elif kind == "overseas":
        place = f"{draw(st.integers(971, 989))}{draw(st.integers(0, 99)):02d}"
    else:
        place = f"99{draw(st.integers(100, 999))}"
    order = draw(st.integers(1, 999))
    return f"{sex}{year:02d}{month:02d}{place}{order:03d}"


@settings(max_examples=300)
@given(nir13())
def test_every_valid_nir_is_accepted(n13):
    check_nir(with_key(n13))
    assert 1 <= nir_key(n13) <= 97


_ALPHABET = "0123456789ABZab -"


@settings(max_examples=300)
@given(nir13(), st.data())
def test_every_single_character_change_is_rejected(n13, data):
    valid = with_key(n13)
    position = data.draw(st.integers(0, 14), label="position")
    replacement = data.draw(st.sampled_from(_ALPHABET).filter(lambda c: c != valid[position]), label="char")
    mutated = valid[:position] + replacement + valid[position + 1 :]
    with pytest.raises(InvalidIdentifier):
        check_nir(mutated)


def test_every_single_character_change_of_one_nir_exhaustively():
    for valid in (ANS_SAMPLE_NIR, with_key("185022A006048"), with_key("285022B123001")):
        for position in range(15):
            for replacement in _ALPHABET:
                if replacement == valid[position]:
                    continue
                mutated = valid[:position] + replacement + valid[position + 1 :]
                with pytest.raises(InvalidIdentifier):
                    check_nir(mutated)
