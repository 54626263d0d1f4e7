"""Tests of the bench harness (messages, data set rows, load generator against the floor).

Needs no database; the schema-validation tests need ../shared (skipped without it, failed in CI).
"""

from __future__ import annotations

import re
import subprocess
import uuid
import sys

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from lxml import etree

from bench import dataset
from bench import messages as M
from bench.load import LoadResult, check_query_response, check_registry_response, run_load
from registry import constants as C

from support import ROOT, need_shared

TO = "http://127.0.0.1:1/xds/registry"


def _schema(name: str) -> etree.XMLSchema:
    return etree.XMLSchema(etree.parse(str(need_shared("xsd", "ebRS", name))))


def _body(wire: bytes) -> etree._Element:
    env = etree.fromstring(wire)
    return env.find(f"{{{M.NS_SOAP12}}}Body")[0]


def test_iti42_request_is_schema_valid_and_has_the_required_metadata():
    wire = M.Iti42Factory(M.bench_patient(1), TO)()
    sor = _body(wire)
    _schema("lcm.xsd").assertValid(sor)
    from registry.ebrim import parse_submit_objects_request

    req = parse_submit_objects_request(sor)
    (ss,), (doc,), (assoc,) = req.submission_sets, req.documents, req.associations
    assert doc.patient_id == ss.patient_id == M.bench_patient(1)
    assert doc.object_type == C.DOC_ENTRY_STABLE
    for scheme in C.DE_CODE_SCHEMES.values():
        assert doc.codes(scheme), scheme
    for name in ("creationTime", "hash", "size", "languageCode", "repositoryUniqueId", "sourcePatientId"):
        assert doc.slot1(name), name
    assert doc.authors[0].person
    assert ss.unique_id and ss.source_id and ss.slot1("submissionTime")
    assert ss.codes(C.SS_CONTENT_TYPE_CODE)
    assert (assoc.association_type, assoc.source_object, assoc.target_object) == (
        C.ASSOC_HAS_MEMBER, ss.id, doc.id)
    assert assoc.submission_set_status == "Original"
    header = etree.fromstring(wire).find(f"{{{M.NS_SOAP12}}}Header")
    assert header.findtext(f"{{{M.NS_WSA}}}Action") == C.ACTION_ITI42


def test_iti42_factory_gives_fresh_unique_ids_and_message_ids():
    make = M.Iti42Factory(M.bench_patient(1), TO)
    seen = set()
    for _ in range(50):
        wire = make()
        env = etree.fromstring(wire)
        sor = env.find(f"{{{M.NS_SOAP12}}}Body")[0]
        uids = [e.get("value") for e in sor.iter(f"{{{C.NS_RIM}}}ExternalIdentifier")
                if e.get("identificationScheme") in (C.DE_UNIQUE_ID, C.SS_UNIQUE_ID)]
        mid = env.findtext(f"{{{M.NS_SOAP12}}}Header/{{{M.NS_WSA}}}MessageID")
        assert len(uids) == 2
        for v in uids + [mid]:
            assert v not in seen
            seen.add(v)
        assert all(len(u) <= 64 and u.startswith("2.25.") for u in uids)


def test_find_documents_request_is_schema_valid_and_quotes_the_patient():
    wire = M.find_documents_request("O'Brien^^^&1.2.3&ISO", TO)
    q = _body(wire)
    _schema("query.xsd").assertValid(q)
    from registry.ebrim import parse_adhoc_query_request

    parsed = parse_adhoc_query_request(q)
    assert parsed is not None
    slots = {s.get("name"): [v.text for v in s.iter(f"{{{C.NS_RIM}}}Value")]
             for s in q.iter(f"{{{C.NS_RIM}}}Slot")}
    assert slots["$XDSDocumentEntryPatientId"] == ["'O''Brien^^^&1.2.3&ISO'"]
    assert slots["$XDSDocumentEntryStatus"] == [f"('{C.STATUS_APPROVED}')"]
    assert q.find(f"{{{C.NS_RIM}}}AdhocQuery").get("id") == C.SQ_FIND_DOCUMENTS


@settings(max_examples=50)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=30))
def test_template_fill_equals_lxml_serialization(value):
    """A value put through xml_safe into a Template is what lxml writes for that value."""
    def build(v: str) -> bytes:
        el = etree.Element("a", b=v)
        etree.SubElement(el, "c").text = v
        return etree.tostring(el, encoding="UTF-8")

    tpl = M.Template(build("@@V@@"), ["@@V@@"])
    filled = tpl.render({"@@V@@": M.xml_safe(value)})
    assert etree.fromstring(filled).get("b") == value
    assert etree.fromstring(filled).findtext("c") == value


def test_dataset_rows_are_consistent():
    gen = dataset.Generator(entries=2000, patients=10)
    entries = list(gen.document_entry_rows())
    ids = {r[0] for r in entries}
    assert len(ids) == 2000
    per_patient: dict[str, int] = {}
    for r in entries:
        per_patient[r[4]] = per_patient.get(r[4], 0) + 1
    assert set(per_patient.values()) == {200}
    codes = list(gen.document_code_rows())
    assert len(codes) == 2000 * len(C.DE_CODE_SCHEMES)
    assert {c[0] for c in codes} == ids
    ss_ids = {r[0] for r in gen.submission_set_rows()}
    assert len(ss_ids) == 2000 // dataset.ENTRIES_PER_SUBMISSION
    assocs = list(gen.association_rows())
    assert {a[3] for a in assocs} == ids and {a[2] for a in assocs} == ss_ids
    assert {r[15] for r in entries} == ss_ids  # submission_set_id column
    # Each submission set holds entries of one patient only.
    patient_of_entry = {r[0]: r[4] for r in entries}
    patient_of_ss = {r[0]: r[2] for r in gen.submission_set_rows()}
    assert all(patient_of_entry[a[3]] == patient_of_ss[a[2]] for a in assocs)


def test_dataset_fragment_is_what_the_registry_codec_reads_back():
    from registry.ebrim import element_to_object
    from registry.fragments import unpack

    gen = dataset.Generator(entries=2000, patients=10)
    row = next(r for i, r in enumerate(gen.document_entry_rows()) if i == 17)
    doc = element_to_object(etree.fromstring(unpack(row[-1])))
    assert doc.id == row[0] and doc.lid == row[0]
    assert doc.unique_id == row[3] and doc.patient_id == row[4]
    assert doc.status == C.STATUS_APPROVED
    assert doc.slot1("creationTime") == row[7]
    code_rows = [c for c in gen.document_code_rows() if c[0] == row[0]]
    assert sorted((s, c.code, c.coding_scheme) for s, scheme in C.DE_CODE_SCHEMES.items()
                  for c in doc.codes(scheme)) == sorted(c[1:] for c in code_rows)


def test_patients_with_entries():
    assert len(dataset.patients_with_entries(20_000)) == 100
    assert dataset.patients_with_entries(1_000_000)[0] == M.bench_patient(0)


def test_checks_reject_failures():
    ok = M.registry_response("urn:uuid:x")
    assert check_registry_response(200, ok) is None
    assert check_registry_response(500, ok) == "HTTP 500"
    bad = ok.replace(C.RESPONSE_SUCCESS.encode(), C.RESPONSE_FAILURE.encode())
    assert "status" in check_registry_response(200, bad)
    assert check_registry_response(200, b"<oops") .startswith("unparsable")
    frags = dataset.sample_fragments(3, patients=10)
    q = M.adhoc_query_response("urn:uuid:x", frags)
    assert check_query_response(3)(200, q) is None
    assert "2 ExtrinsicObjects" in check_query_response(2)(200, q) or check_query_response(2)(200, q)
    assert check_query_response(3)(200, ok) is not None


def test_percentiles():
    r = LoadResult(100, 0, 1.0, [i / 1000 for i in range(1, 101)])
    assert (r.p50, r.p90, r.p99) == (50.0, 90.0, 99.0)
    assert r.throughput == 100


def test_load_refuses_non_loopback():
    with pytest.raises(ValueError):
        run_load("http://example.org/x", lambda i: b"", clients=1, duration=0.1)


@pytest.fixture(scope="module")
def floor_url():
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.floor", "--port", "0", "--entries-per-patient", "5"],
        cwd=ROOT, stdout=subprocess.PIPE, start_new_session=True,
    )
    try:
        line = proc.stdout.readline().decode()
        assert line.startswith("LISTENING "), line
        yield f"http://127.0.0.1:{int(line.split()[1])}/xds/registry"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_load_against_floor_counts_successes_and_failures(floor_url):
    make = M.Iti42Factory(M.bench_patient(1), floor_url)
    r = run_load(floor_url, lambda i: make(), clients=4, duration=5, max_requests=200, warmup=2)
    assert (r.requests, r.failures) == (200, 0)
    assert r.p50 <= r.p90 <= r.p99
    q = run_load(floor_url, lambda i: M.find_documents_request(M.bench_patient(0), floor_url),
                 check=check_query_response(5), clients=1, duration=5, max_requests=20, warmup=1)
    assert (q.requests, q.failures) == (20, 0)
    # Expecting another count makes every response a failure, and the first one is kept.
    bad = run_load(floor_url, lambda i: M.find_documents_request(M.bench_patient(0), floor_url),
                   check=check_query_response(200), clients=1, duration=5, max_requests=5, warmup=0)
    assert (bad.requests, bad.failures) == (0, 5)
    assert "5 ExtrinsicObjects, expected 200" in bad.first_failure


def _postgresql_admin_url() -> str:
    """The tests' PostgreSQL as a libpq URL; skips without one (fails in CI)."""
    from support import IN_CI, PG_URL, pg_problem

    problem = pg_problem()
    if problem:
        if IN_CI:
            pytest.fail(f"PostgreSQL is required in CI: {problem}")
        pytest.skip(f"PostgreSQL not available: {problem}")
    return PG_URL.replace("+psycopg", "")


def test_reuse_db_recognises_only_the_data_set_it_was_asked_for():
    """`python -m bench --reuse-db` skips the load only when the database holds that data set."""
    from bench.procs import database_url, drop_database, recreate_database

    admin = _postgresql_admin_url()
    name = f"carnet_test_bench_{uuid.uuid4().hex[:8]}"
    assert not dataset.holds_data_set(database_url(admin, name), 400)  # no such database
    url = recreate_database(admin, name)
    try:
        assert not dataset.holds_data_set(url, 400)  # no schema yet
        dataset.load(url, 400, log=lambda _line: None)
        assert dataset.holds_data_set(url, 400)
        assert not dataset.holds_data_set(url, 200)
        assert not dataset.holds_data_set(url, 600)
        from bench.__main__ import prewarm

        said = prewarm(url)  # what `python -m bench` does before ITI-18 and ITI-42
        assert said.startswith(("pg_prewarm read", "sequential scan")), said
    finally:
        drop_database(admin, name)


def test_iti18_is_measured_in_chunks_each_after_a_prewarm():
    from bench.__main__ import in_warm_chunks

    calls: list = []

    def measure(n, seed, warmup):
        calls.append(("measure", n, seed, warmup))
        return LoadResult(n, 1 if seed == 3 else 0, 0.5, [0.001 * seed] * n, f"failure {seed}" if seed == 3 else None)

    merged = in_warm_chunks(measure, 250, lambda: calls.append(("warm",)) or "", chunk=100)
    assert calls == [("warm",), ("measure", 100, 2, 20), ("warm",), ("measure", 100, 3, 0),
                     ("warm",), ("measure", 50, 4, 0)]  # warm-up requests only in the first chunk
    assert (merged.requests, merged.failures, merged.seconds, len(merged.latencies)) == (250, 1, 1.5, 250)
    assert merged.first_failure == "failure 3"


def test_a_local_postgresql_is_reached_through_its_unix_socket(tmp_path, monkeypatch):
    from bench import procs

    (tmp_path / ".s.PGSQL.5433").touch()
    monkeypatch.setattr(procs, "PG_SOCKET_DIRS", (str(tmp_path / "missing"), str(tmp_path)))
    assert procs.database_url("postgresql://postgres@127.0.0.1:5433/test", "b") == (
        f"postgresql://postgres@/b?host={tmp_path}&port=5433")
    # no socket for that port, another host, or --pg-tcp: TCP as given
    assert procs.database_url("postgresql://postgres@127.0.0.1:5432/test", "b") == "postgresql://postgres@127.0.0.1:5432/b"
    assert procs.database_url("postgresql://postgres@db.example:5433/test", "b") == "postgresql://postgres@db.example:5433/b"
    monkeypatch.setattr(procs, "PG_LOCAL_SOCKET", False)
    assert procs.database_url("postgresql://postgres@127.0.0.1:5433/test", "b") == "postgresql://postgres@127.0.0.1:5433/b"


def test_the_socket_url_reaches_the_same_server_for_psycopg_and_carnet():
    """Both the bench's psycopg connections and Carnet's engine accept the socket form."""
    from bench import procs
    from registry.db import make_engine
    from sqlalchemy import text

    url = procs.database_url(_postgresql_admin_url(), "test")
    if "host=" not in url:
        pytest.skip("no Unix socket for this PostgreSQL")
    with psycopg.connect(dataset.libpq_url(url)) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            assert c.execute(text("SELECT inet_server_addr() IS NULL")).scalar() is True  # not over TCP
    finally:
        engine.dispose()


def test_a_target_the_floor_misses_too_is_said_so(capsys):
    """A slow machine is told from a slow Carnet: a MISSED line says when the floor, which does
    less than Carnet, misses the target too."""
    from bench.table import Row, print_outcome

    rows = [
        Row("ITI-43 retrieve 1 MB, 1 client(s)", "MB/s", 156.2, 248.66, "≥ 300 MB/s", lambda v: v >= 300),
        Row("ITI-42 register 1 doc, 8 clients", "/s", 177.7, 1281.3, "≥ 500/s", lambda v: v >= 500),
        Row("ITI-18 p50", "ms", 11.3, 3.4, "≤ 5 ms", lambda v: v <= 5, False),
        Row("ITI-18 p99", "ms", 19.0, 21.0, "≤ 20 ms", lambda v: v <= 20, False),  # Carnet passes
        Row("  of which SQL only", "ms", 3.1, None, "-", lambda v: True, False),
    ]
    print_outcome(rows, [])
    assert capsys.readouterr().out.splitlines() == [
        "MISSED: ITI-43 retrieve 1 MB, 1 client(s) (the floor misses it too: 248.66 MB/s)",
        "MISSED: ITI-42 register 1 doc, 8 clients",
        "MISSED: ITI-18 p50",
    ]


_BURNER = """
import subprocess, sys, time
def burn(seconds):
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass
sender = "--audit-sender" in sys.argv
if not sender:
    child = subprocess.Popen([sys.executable, "-c", sys.argv[1], sys.argv[1], "--audit-sender"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert child.stdout.readline() == b"ready\\n"
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()                      # the meter has started
if not sender:
    child.stdin.write(b"go\\n"); child.stdin.flush()
burn(0.2 if sender else 0.4)
if not sender:
    assert child.stdout.readline() == b"done\\n"
sys.stdout.write("done\\n"); sys.stdout.flush()
sys.stdin.readline()                      # both stay alive until the meter has stopped
if not sender:
    child.stdin.close(); child.wait()
"""


def test_cpu_meter_splits_the_cpu_of_a_run_by_process_role():
    from bench.cpu import CpuMeter

    proc = subprocess.Popen([sys.executable, "-c", _BURNER, _BURNER], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    try:
        assert proc.stdout.readline() == b"ready\n"
        meter = CpuMeter(proc.pid)
        meter.start()
        proc.stdin.write(b"go\n")
        proc.stdin.flush()
        assert proc.stdout.readline() == b"done\n"
        split = meter.stop(requests=100)
    finally:
        proc.stdin.close()
        proc.wait(timeout=20)
    # 400 ms and 200 ms of CPU over 100 requests: 4 and 2 ms a request (the kernel counts in 10 ms
    # ticks; the interpreters' own work adds a little)
    assert 3.6 <= split.ms_per_request["server"] < 5.0, split
    assert 1.6 <= split.ms_per_request["audit sender"] < 3.0, split
    assert split.processes["server"] == 1
    assert "load generator" in split.ms_per_request
    assert re.search(r"^CPU ms per request: server [34]\.\d\d, audit sender [12]\.\d\d, ", split.summary())
    assert 0 < split.cores_busy <= 1.0
