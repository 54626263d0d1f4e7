"""Bulk-load a registry of N DocumentEntries into PostgreSQL, straight into `registry.schema`.

~5 000 patients × 200 entries for the default 1 M; each entry gets its stored ebRIM fragment,
its seven coded values (document_code), its author (document_author), a HasMember association
from a SubmissionSet of 10 entries, and the SubmissionSet itself (with its author). Rows are
written with COPY (psycopg 3 `cursor.copy`, binary format), entries of one patient interleaved
with the others' as a registry fed over years would store them. Secondary indexes and
constraints are dropped first and rebuilt after the load from their own definitions, then
VACUUM ANALYZE and a CHECKPOINT (so that the load's dirty pages are not written out during the measurements).

Identifiers are a bijection of the row number, so two processes can load different tables and
still agree on every foreign key.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import time
from typing import Callable, Iterator

import psycopg

from bench import messages as M
from registry.fragments import PACKED, pack
from registry import constants as C

ENTRIES_PER_PATIENT = 200
ENTRIES_PER_SUBMISSION = 10

TABLES = (
    "patient",
    "document_entry",
    "document_code",
    "document_author",
    "document_reference_id",
    "submission_set",
    "submission_set_author",
    "folder",
    "folder_code",
    "association",
)

# --- identifiers ---------------------------------------------------------------------------------

_MASK = (1 << 104) - 1
_NAMESPACES = {  # odd multipliers make n → n·m + o a bijection modulo 2**104
    "entry": (0x9E3779B97F4A7C15F39CC0605D, 0x5BD1E9955BD1E9955BD1E99551),
    "ss": (0xC2B2AE3D27D4EB4F165667B19F, 0x27D4EB2F165667C527D4EB2F16),
    "assoc": (0xFF51AFD7ED558CCDC4CEB9FE1B, 0x1B873593CC9E2D5185EBCA6B77),
}


def uuid_prefix(namespace: str, n: int) -> str:
    """The first 41 characters of a urn:uuid (version 4 layout); the last 4 hex digits number
    the object (0000) and its classifications/external identifiers (0001…)."""
    mult, off = _NAMESPACES[namespace]
    h = f"{(n * mult + off) & _MASK:026x}"
    return f"urn:uuid:{h[:8]}-{h[8:12]}-4{h[12:15]}-8{h[15:18]}-{h[18:26]}"


def entry_id(i: int) -> str:
    return uuid_prefix("entry", i) + "0000"


def patient_of(i: int, patients: int) -> int:
    """Rows are interleaved: row i belongs to patient i mod P (its (i // P)-th entry)."""
    return i % patients


def submission_of(i: int, patients: int) -> int:
    p, j = i % patients, i // patients
    return p * (ENTRIES_PER_PATIENT // ENTRIES_PER_SUBMISSION) + j // ENTRIES_PER_SUBMISSION


def creation_time(i: int, patients: int) -> str:
    """Entries of one patient spread over ~5 years, in submission order."""
    j = i // patients
    day = 9 * j + (i * 7919) % 9  # 200 entries × 9 days
    t = time.gmtime(1_420_070_400 + day * 86400 + (i * 104729) % 86400)  # from 2015-01-01
    return time.strftime("%Y%m%d%H%M%S", t)


# --- stored fragments ----------------------------------------------------------------------------

_S_ID = "urn:uuid:eeeeeeee-eeee-4eee-8eee-eeeeeeee"  # 41 chars, like uuid_prefix()
_S_PATIENT = "@@PATIENT@@"
_S_UID = "@@UNIQUEID@@"
_S_TIME = "29991231235959"
_S_TIME12 = _S_TIME[:12]

CODE_CHOICES: dict[str, tuple[tuple[str, str, str], ...]] = {
    "classCode": M.CLASS_CODES,
    "confidentialityCode": M.CONFIDENTIALITY_CODES,
    "eventCodeList": M.EVENT_CODES,
    "formatCode": M.FORMAT_CODES,
    "healthcareFacilityTypeCode": M.FACILITY_TYPE_CODES,
    "practiceSettingCode": M.PRACTICE_SETTING_CODES,
    "typeCode": M.TYPE_CODES,
}
_S_CODE = {k: (f"@@{k}@@", f"@@{k}S@@", f"@@{k}N@@") for k in CODE_CHOICES}
AUTHOR_PERSON = "801234567897^Martin^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO^D^^^IDNPS"


def stored_form(el) -> bytes:
    """An object as the registry stores it after ITI-42 (ITI TF-3 §4.1.12.3: lid = entryUUID,
    version 1, Approved), serialized by the registry's own codec when it is available."""
    from lxml import etree

    try:
        import attrs

        from registry.ebrim import element_to_object, object_to_bytes
    except ImportError:  # codec not written yet: the same fragment, by hand
        el.set("status", C.STATUS_APPROVED)
        el.set("lid", el.get("id"))
        return etree.tostring(el, encoding="UTF-8")
    obj = element_to_object(el)
    return object_to_bytes(attrs.evolve(obj, lid=obj.id, version_name="1", status=C.STATUS_APPROVED))


def _fragment_template() -> M.Template:
    el = M.document_entry(
        _S_ID + "0000",
        _S_PATIENT,
        _S_UID,
        creation_time=_S_TIME,
        codes={k: v for k, v in _S_CODE.items()},
    )
    sentinels = [_S_ID, _S_PATIENT, _S_UID, _S_TIME, _S_TIME12] + [s for t in _S_CODE.values() for s in t]
    return M.Template(stored_form(el), sentinels)


def _ss_template() -> M.Template:
    el = M.submission_set(_S_ID + "0000", _S_PATIENT, _S_UID, _S_TIME)
    return M.Template(stored_form(el), [_S_ID, _S_PATIENT, _S_UID, _S_TIME])


def _assoc_template() -> M.Template:
    el = M.has_member(_S_ID + "0000", "@@SOURCE@@", "@@TARGET@@")
    return M.Template(stored_form(el), [_S_ID, "@@SOURCE@@", "@@TARGET@@"])


class Generator:
    """Every row of the data set, computed from row numbers only."""

    def __init__(self, entries: int, patients: int) -> None:
        self.entries = entries
        self.patients = patients
        self.fragment = _fragment_template()
        self.ss = _ss_template()
        self.assoc = _assoc_template()
        self.patient_ids = [M.bench_patient(p) for p in range(patients)]
        self.patient_raw = [M.xml_safe(p) for p in self.patient_ids]

    def codes(self, i: int) -> dict[str, tuple[str, str, str]]:
        return {k: v[(i * 31 + len(k)) % len(v)] for k, v in CODE_CHOICES.items()}

    def entry_fragment(self, i: int) -> bytes:
        ctime = creation_time(i, self.patients)
        values = {
            _S_ID: uuid_prefix("entry", i).encode(),
            _S_PATIENT: self.patient_raw[patient_of(i, self.patients)],
            _S_UID: f"1.2.250.1.999.1.{i}".encode(),
            _S_TIME: ctime.encode(),
            _S_TIME12: ctime[:12].encode(),
        }
        codes = self.codes(i)
        for k, (sc, ss, sn) in _S_CODE.items():
            code, scheme, name = codes[k]
            values[sc], values[ss], values[sn] = M.xml_safe(code), M.xml_safe(scheme), M.xml_safe(name)
        return self.fragment.render(values)

    # rows per table, in COPY column order

    def patient_rows(self) -> Iterator[tuple]:
        for pid in self.patient_ids:
            yield (pid, "20150101000000")

    def document_entry_rows(self, start: int = 0, stop: int | None = None) -> Iterator[tuple]:
        P = self.patients
        for i in range(start, self.entries if stop is None else stop):
            ctime = creation_time(i, P)
            eid = entry_id(i)
            yield (
                eid, eid, 1, f"1.2.250.1.999.1.{i}", self.patient_ids[i % P], C.STATUS_APPROVED,
                C.DOC_ENTRY_STABLE, ctime, ctime[:12] + "00", ctime[:12] + "00", M.BENCH_REPOSITORY,
                "da39a3ee5e6b4b0d3255bfef95601890afd80709", 48213, "application/pdf", None,
                uuid_prefix("ss", submission_of(i, P)) + "0000", pack(self.entry_fragment(i)),
            )

    def document_code_rows(self) -> Iterator[tuple]:
        for i in range(self.entries):
            eid = entry_id(i)
            for short, (code, scheme, _name) in self.codes(i).items():
                yield (eid, short, code, scheme)

    def document_author_rows(self) -> Iterator[tuple]:
        for i in range(self.entries):
            yield (entry_id(i), AUTHOR_PERSON)

    def _submissions(self) -> Iterator[tuple[int, int]]:
        """(submission number, its first row) for every SubmissionSet."""
        P = self.patients
        per_patient = -(-self.entries // P)
        for p in range(P):
            for k in range(-(-per_patient // ENTRIES_PER_SUBMISSION)):
                first = p + k * ENTRIES_PER_SUBMISSION * P
                if first < self.entries:
                    yield submission_of(first, P), first

    def submission_set_rows(self) -> Iterator[tuple]:
        P = self.patients
        for s, first in self._submissions():
            pid = self.patient_ids[first % P]
            stime = creation_time(first, P)
            uid = f"1.2.250.1.999.2.{s}"
            prefix = uuid_prefix("ss", s)
            xml = self.ss.render(
                {_S_ID: prefix.encode(), _S_PATIENT: self.patient_raw[first % P], _S_UID: uid.encode(), _S_TIME: stime.encode()}
            )
            yield (
                prefix + "0000", uid, pid, M.BENCH_SOURCE_ID, stime, C.STATUS_APPROVED,
                M.CONTENT_TYPE_CODES[0][0], M.CONTENT_TYPE_CODES[0][1], None, pack(xml),
            )

    def submission_set_author_rows(self) -> Iterator[tuple]:
        for s, _first in self._submissions():
            yield (uuid_prefix("ss", s) + "0000", AUTHOR_PERSON)

    def association_rows(self) -> Iterator[tuple]:
        P = self.patients
        for i in range(self.entries):
            aid = uuid_prefix("assoc", i)
            src = uuid_prefix("ss", submission_of(i, P)) + "0000"
            tgt = entry_id(i)
            xml = self.assoc.render({_S_ID: aid.encode(), "@@SOURCE@@": src.encode(), "@@TARGET@@": tgt.encode()})
            yield (aid + "0000", C.ASSOC_HAS_MEMBER, src, tgt, C.STATUS_APPROVED, "Original", pack(xml))


COLUMNS = {
    "patient": (("patient_id", "text"), ("created_at", "text")),
    "document_entry": (
        ("id", "text"), ("lid", "text"), ("version", "int4"), ("unique_id", "text"), ("patient_id", "text"),
        ("status", "text"), ("object_type", "text"), ("creation_time", "text"), ("service_start_time", "text"),
        ("service_stop_time", "text"), ("repository_unique_id", "text"), ("hash", "text"), ("size", "int8"),
        ("mime_type", "text"), ("home", "text"), ("submission_set_id", "text"), ("xml", "bytea"),
    ),
    "document_code": (("entry_id", "text"), ("scheme", "text"), ("code", "text"), ("coding_scheme", "text")),
    "document_author": (("entry_id", "text"), ("person", "text")),
    "submission_set": (
        ("id", "text"), ("unique_id", "text"), ("patient_id", "text"), ("source_id", "text"),
        ("submission_time", "text"), ("status", "text"), ("content_type_code", "text"),
        ("content_type_coding_scheme", "text"), ("home", "text"), ("xml", "bytea"),
    ),
    "submission_set_author": (("ss_id", "text"), ("person", "text")),
    "association": (
        ("id", "text"), ("association_type", "text"), ("source_id", "text"), ("target_id", "text"),
        ("status", "text"), ("submission_set_status", "text"), ("xml", "bytea"),
    ),
}

WORKERS = 2  # one per core of the 2-core target machine; each also keeps a PostgreSQL backend busy


# --- database ------------------------------------------------------------------------------------


def libpq_url(url: str) -> str:
    """psycopg wants postgresql://; SQLAlchemy URLs may say postgresql+psycopg://."""
    scheme, rest = url.split("://", 1)
    return "postgresql://" + rest if scheme.startswith("postgresql") else url


# COPY jobs: (table, first row, last row) — document_entry, whose fragments PostgreSQL must
# compress (lz4, in the row: registry.schema.xml_storage_sql), is cut in row ranges so both
# cores work on it; the other tables go whole.
ENTRY_CHUNKS = 4


def _jobs(entries: int) -> list[tuple[str, int, int | None]]:
    step = -(-entries // ENTRY_CHUNKS)
    chunks = [("document_entry", a, min(a + step, entries)) for a in range(0, entries, step)]
    rest = ["document_code", "association", "document_author", "submission_set", "submission_set_author", "patient"]
    return chunks[:2] + [(t, 0, None) for t in rest[:1]] + chunks[2:] + [(t, 0, None) for t in rest[1:]]


def copy_job(url: str, job: tuple[str, int, int | None], entries: int, patients: int) -> tuple[str, int, float]:
    """COPY one job's rows. A whole table is TRUNCATEd and COPYed with FREEZE in one transaction
    (rows arrive frozen, no hint-bit rewrite by the first readers); a chunk is a plain COPY."""
    table, start, stop = job
    t0 = time.perf_counter()
    gen = Generator(entries, patients)
    cols = COLUMNS[table]
    whole = stop is None
    rows = gen.document_entry_rows(start, stop) if table == "document_entry" else getattr(gen, f"{table}_rows")()
    n = 0
    with psycopg.connect(libpq_url(url)) as conn:
        conn.execute("SET synchronous_commit = off")
        with conn.cursor() as cur:
            if whole:
                cur.execute(f"TRUNCATE {table}")
            names = ", ".join(c for c, _ in cols)
            options = "FORMAT BINARY, FREEZE" if whole else "FORMAT BINARY"
            with cur.copy(f"COPY {table} ({names}) FROM STDIN ({options})") as cp:
                cp.set_types([t for _, t in cols])
                for row in rows:
                    cp.write_row(row)
                    n += 1
    label = table if whole else f"{table}[{start}:{stop}]"
    return label, n, time.perf_counter() - t0


def _copy_job_star(args):
    return copy_job(*args)


def _secondary_objects(conn: psycopg.Connection) -> tuple[list[tuple[str, str, str]], list[tuple[str, str]]]:
    """(table, constraint, definition) of PK/unique constraints and (index, CREATE INDEX …) of
    the other indexes of our tables, so they can be dropped and rebuilt identically."""
    names = list(TABLES)
    constraints = conn.execute(
        """SELECT c.conrelid::regclass::text, c.conname, pg_get_constraintdef(c.oid)
             FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace
            WHERE n.nspname = current_schema() AND c.contype IN ('p', 'u')
              AND c.conrelid::regclass::text = ANY(%s)""",
        (names,),
    ).fetchall()
    indexes = conn.execute(
        """SELECT i.indexname, i.indexdef FROM pg_indexes i
            WHERE i.schemaname = current_schema() AND i.tablename = ANY(%s)
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c
                               WHERE c.conindid = (quote_ident(i.schemaname) || '.' || quote_ident(i.indexname))::regclass)""",
        (names,),
    ).fetchall()
    return constraints, indexes


def ensure_schema(url: str) -> None:
    """Use the schema `carnet db upgrade` made; create it from registry.schema if absent."""
    with psycopg.connect(libpq_url(url)) as conn:
        exists = conn.execute("SELECT to_regclass('document_entry') IS NOT NULL").fetchone()[0]
    if not exists:
        from registry.db import create_schema, make_engine

        engine = make_engine(url)
        try:
            create_schema(engine)
        finally:
            engine.dispose()


def load(url: str, entries: int, *, patients: int | None = None, log: Callable[[str], None] = print) -> dict:
    """Load the data set; returns timings. `patients` defaults to entries / 200."""
    patients = patients or max(1, entries // ENTRIES_PER_PATIENT)
    t0 = time.perf_counter()
    ensure_schema(url)
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        constraints, indexes = _secondary_objects(conn)
        for name, _ in indexes:
            conn.execute(f'DROP INDEX IF EXISTS "{name}"')
        for table, name, _ in constraints:
            conn.execute(f'ALTER TABLE {table} DROP CONSTRAINT IF EXISTS "{name}"')
        conn.execute("TRUNCATE " + ", ".join(TABLES))

    t_copy = time.perf_counter()
    jobs = _jobs(entries)
    counts: dict[str, int] = {}
    with multiprocessing.get_context("fork").Pool(WORKERS) as pool:
        for label, n, secs in pool.imap_unordered(_copy_job_star, [(url, j, entries, patients) for j in jobs]):
            table = label.split("[")[0]
            counts[table] = counts.get(table, 0) + n
            log(f"  COPY {label}: {n} rows in {secs:.1f} s")
    copy_secs = time.perf_counter() - t_copy

    t_idx = time.perf_counter()
    with psycopg.connect(libpq_url(url), autocommit=True) as conn:
        conn.execute("SET maintenance_work_mem = '1GB'")
        for table, name, definition in constraints:
            conn.execute(f'ALTER TABLE {table} ADD CONSTRAINT "{name}" {definition}')
        for _name, definition in indexes:
            conn.execute(definition)
        idx_secs = time.perf_counter() - t_idx
        t_vac = time.perf_counter()
        conn.execute("VACUUM (ANALYZE) " + ", ".join(TABLES))
        # The ~3 GB just written are dirty pages: without a checkpoint now, PostgreSQL's next one
        # writes them out during the measurements that follow (ITI-18 p99 of 60–90 ms, seen).
        try:
            conn.execute("CHECKPOINT")
        except psycopg.Error as exc:  # CHECKPOINT needs a superuser or pg_checkpoint
            log(f"  (no CHECKPOINT after the load: {exc})")
        vac_secs = time.perf_counter() - t_vac
    log(
        f"  indexes+constraints rebuilt in {idx_secs:.1f} s ({len(indexes)} indexes, {len(constraints)} constraints),"
        f" VACUUM ANALYZE and CHECKPOINT {vac_secs:.1f} s"
    )
    return {
        "entries": entries,
        "patients": patients,
        "rows": counts,
        "copy_s": copy_secs,
        "index_s": idx_secs,
        "vacuum_s": vac_secs,
        "total_s": time.perf_counter() - t0,
    }


def holds_data_set(url: str, entries: int) -> bool:
    """Whether the database at `url` exists and holds the data set of `entries` entries (its last
    entry, and not the next one), stored as the registry stores it now (packed fragments:
    `registry.fragments`); ITI-42 rows added by bench runs do not count."""
    try:
        with psycopg.connect(libpq_url(url), autocommit=True) as conn:
            found = conn.execute(
                "SELECT id, substr(xml, 1, 1) FROM document_entry WHERE id = ANY(%s)",
                ([entry_id(entries - 1), entry_id(entries)],),
            ).fetchall()
    except psycopg.Error:
        return False
    return [(r[0], bytes(r[1])) for r in found] == [(entry_id(entries - 1), PACKED)]


def patients_with_entries(entries: int, patients: int | None = None) -> list[str]:
    """Patients holding exactly ENTRIES_PER_PATIENT entries (all of them when entries = P × 200)."""
    patients = patients or max(1, entries // ENTRIES_PER_PATIENT)
    return [M.bench_patient(p) for p in range(patients) if len(range(p, entries, patients)) == ENTRIES_PER_PATIENT]


def sample_fragments(n: int = ENTRIES_PER_PATIENT, patients: int = 5000) -> list[bytes]:
    """The stored fragments of patient 0 (for the floor's canned FindDocuments answer)."""
    gen = Generator(n * patients, patients)
    return [gen.entry_fragment(j * patients) for j in range(n)]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.dataset")
    ap.add_argument("--database-url", required=True)
    ap.add_argument("--entries", type=int, default=1_000_000)
    args = ap.parse_args(argv)
    info = load(args.database_url, args.entries)
    print(f"loaded {info['entries']} entries for {info['patients']} patients in {info['total_s']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
