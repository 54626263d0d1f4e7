"""Syntax checks of registry.validate.formats: generated valid values accepted, mutated ones rejected."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given, strategies as st

from registry.validate import formats as F

# --- generators of valid values -----------------------------------------------------------------

arcs = st.integers(0, 10**9).map(str)
oids = st.lists(arcs, min_size=1, max_size=8).map(".".join).filter(lambda s: len(s) <= 64)
ext_chars = st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="^")
extensions = st.text(ext_chars, min_size=1, max_size=16)
# ITI TF-3 §4.2.3.2.26: an OID root ≤ 64 characters, an extension ≤ 16 (so up to 81 in all, ≤ 128).
unique_ids = oids | st.tuples(oids, extensions).map("^".join)
cx1 = st.text(st.characters(min_codepoint=0x21, max_codepoint=0x7E, blacklist_characters="^&"), min_size=1, max_size=20)
patient_ids = st.builds(lambda i, o, t: f"{i}^^^&{o}&ISO" + (f"^{t}" if t else ""), cx1, oids, st.sampled_from(["", "NH", "PI"]))
datetimes = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59))
dtms = st.builds(lambda d, n: d.strftime("%Y%m%d%H%M%S").zfill(14)[:n], datetimes, st.sampled_from([4, 6, 8, 10, 12, 14]))
hashes = st.text("0123456789abcdefABCDEF", min_size=40, max_size=40)
sizes = st.integers(0, 2**63 - 1).map(str)
alpha = st.text("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=1, max_size=8)
alnum = st.text("abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=8)
languages = st.builds(lambda p, subs: "-".join([p, *subs]), alpha.filter(lambda s: len(s) >= 2), st.lists(alnum, max_size=2))
mime_names = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9.+-]{0,20}", fullmatch=True)
mimes = st.builds(lambda a, b: f"{a}/{b}", mime_names, mime_names)
uris = st.builds(lambda s, p: f"{s}://{p}", st.sampled_from(["http", "https", "urn", "ftp"]), alnum)
names = st.text(st.characters(min_codepoint=0x41, max_codepoint=0x7A, blacklist_characters="^&\\[]`"), min_size=1, max_size=10)
xcns = st.builds(lambda i, f, o: f"{i}^{f}^Claire^^^^^^&{o}&ISO", names, names, oids) | names
xons = st.builds(lambda n, o, i: f"{n}^^^^^&{o}&ISO^^^^{i}", names, oids, names) | names | st.builds(lambda n, o: f"{n}^^^^^^^^^{o}", names, oids)
xtns = st.builds(lambda u: f"^^Internet^{u}@example.org", names) | st.builds(lambda n: f"^PRN^PH^^^^{n}", st.integers(0, 10**9).map(str))


@given(oids)
def test_oid_valid(v):
    assert F.oid(v) is None


@given(oids, st.sampled_from(["leading-zero", "letter", "empty-arc", "trailing-dot", "too-long"]))
def test_oid_mutated(v, how):
    bad = {
        "leading-zero": v + ".012",
        "letter": v + ".1a",
        "empty-arc": v.replace(".", "..", 1) if "." in v else v + "..1",
        "trailing-dot": v + ".",
        "too-long": v + "." + "1" * 64,
    }[how]
    assert F.oid(bad) is not None


@given(unique_ids)
def test_unique_id_valid(v):
    assert F.document_unique_id(v) is None


@given(oids, st.sampled_from(["long-ext", "empty-ext", "bad-root", "two-carets", "too-long"]))
def test_unique_id_mutated(root, how):
    bad = {
        "long-ext": root + "^" + "x" * 17,
        "empty-ext": root + "^",
        "bad-root": "01." + root + "^x",
        "two-carets": root + "^a^b",
        "too-long": root + "." + "9" * 32 + "." + "9" * 32,  # the OID root over 64 characters
    }[how]
    assert F.document_unique_id(bad) is not None


@given(patient_ids)
def test_patient_id_valid(v):
    assert F.cx_patient_id(v) is None


@given(cx1, oids, st.sampled_from(["no-iso", "namespace", "cx2", "empty-id", "cx6", "bad-oid", "no-amp"]))
def test_patient_id_mutated(i, o, how):
    bad = {
        "no-iso": f"{i}^^^&{o}&L",
        "namespace": f"{i}^^^NS&{o}&ISO",
        "cx2": f"{i}^x^^&{o}&ISO",
        "empty-id": f"^^^&{o}&ISO",
        "cx6": f"{i}^^^&{o}&ISO^NH^extra",
        "bad-oid": f"{i}^^^&{o}.01&ISO",
        "no-amp": f"{i}^^^{o}",
    }[how]
    assert F.cx_patient_id(bad) is not None


def test_patient_id_examples():
    assert F.cx_patient_id("1234567890123^^^&1.2.250.1.213.1.4.8&ISO^NH") is None
    assert F.cx_patient_id("SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO") is None
    assert F.cx_patient_id("SELF-5^^^&1.3.6.1.4.1.21367.2005.3.7&ISO^nh") is not None


@given(dtms)
def test_dtm_valid(v):
    assert F.dtm(v) is None


@given(dtms, st.sampled_from(["odd-length", "month-13", "hour-24", "minute-60", "separator", "timezone", "day-32"]))
def test_dtm_mutated(v, how):
    full = (v + "0101000000"[len(v) - 4:])
    bad = {
        "odd-length": v + "1",
        "month-13": full[:4] + "13",
        "day-32": full[:6] + "32",
        "hour-24": full[:8] + "24",
        "minute-60": full[:10] + "60",
        "separator": full[:4] + "-" + full[4:6],
        "timezone": full + "+0100",
    }[how]
    assert F.dtm(bad) is not None


def test_dtm_calendar():
    assert F.dtm("20240229") is None
    assert F.dtm("20230229") is not None
    assert F.dtm("0000") is not None


@given(hashes)
def test_hash_valid(v):
    assert F.sha1_hash(v) is None


@given(hashes, st.sampled_from(["short", "long", "non-hex"]))
def test_hash_mutated(v, how):
    bad = {"short": v[:39], "long": v + "0", "non-hex": v[:39] + "g"}[how]
    assert F.sha1_hash(bad) is not None


@given(sizes)
def test_size_valid(v):
    assert F.size(v) is None


@given(sizes, st.sampled_from(["negative", "sign", "decimal", "space", "huge"]))
def test_size_mutated(v, how):
    bad = {"negative": "-" + v, "sign": "+" + v, "decimal": v + ".0", "space": v + " ", "huge": str(2**63)}[how]
    assert F.size(bad) is not None


@given(languages)
def test_language_valid(v):
    assert F.language_code(v) is None


@given(languages, st.sampled_from(["underscore", "space", "empty-subtag", "long-subtag"]))
def test_language_mutated(v, how):
    bad = {"underscore": v + "_US", "space": v + " x", "empty-subtag": v + "--x", "long-subtag": v + "-abcdefghi"}[how]
    assert F.language_code(bad) is not None


@given(mimes)
def test_mime_valid(v):
    assert F.mime_type(v) is None
    assert F.mime_type(v + "; charset=UTF-8") is None


@given(mimes, st.sampled_from(["no-slash", "space", "two-slashes"]))
def test_mime_mutated(v, how):
    bad = {"no-slash": v.replace("/", ""), "space": v.replace("/", " /"), "two-slashes": v + "/x"}[how]
    assert F.mime_type(bad) is not None


@given(uris)
def test_uri_valid(v):
    assert F.uri(v) is None


@given(uris, st.sampled_from(["space", "no-scheme", "empty"]))
def test_uri_mutated(v, how):
    bad = {"space": v + " x", "no-scheme": v.split(":", 1)[1].lstrip("/"), "empty": ""}[how]
    assert F.uri(bad) is not None


@given(xcns)
def test_xcn_valid(v):
    assert F.xcn(v) is None


@given(oids, st.sampled_from(["empty", "no-id-no-name", "bad-authority"]))
def test_xcn_mutated(o, how):
    bad = {"empty": "", "no-id-no-name": "^^Claire^^^Dr", "bad-authority": f"1^Martin^^^^^^^&{o}&L"}[how]
    assert F.xcn(bad) is not None


@given(xons)
def test_xon_valid(v):
    assert F.xon(v) is None


@given(names, st.sampled_from(["no-name", "id-without-authority", "too-many"]))
def test_xon_mutated(n, how):
    bad = {"no-name": f"^^^^^&1.2&ISO^^^^{n}", "id-without-authority": f"{n}^^^^^^^^^{n}", "too-many": n + "^" * 10}[how]
    assert F.xon(bad) is not None


@given(xtns)
def test_xtn_valid(v):
    assert F.xtn(v) is None


@pytest.mark.parametrize("bad", ["", "^^", "^^Internet^", "^PRN^PH"])
def test_xtn_mutated(bad):
    assert F.xtn(bad) is not None


@given(st.text())
def test_checks_never_raise(v):
    for check in (F.oid, F.uuid_urn, F.document_unique_id, F.cx_patient_id, F.cx_source_patient_id, F.xcn,
                  F.xon, F.xtn, F.dtm, F.sha1_hash, F.size, F.uri, F.language_code, F.mime_type):
        result = check(v)
        assert result is None or isinstance(result, str)
