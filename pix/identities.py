"""The cross-reference store (the `pix.xref.CrossReferences` port): the in-memory fake
`MemoryCrossReferences` and the real adapter `SqlCrossReferences` (SQLAlchemy Core, SQLite
and PostgreSQL). One contract suite (tests/pix_core) runs on both.

Model. An *identity* is one identifier, keyed by (assigning authority OID, value) — CX.4.2 and
CX.1 — with the demographics and identity reliability of the last feed that carried it. Every
active identity belongs to one *group*: the identifiers of one person, cross-referenced. A feed
links all the identifiers it carries into one group (ITI TF-2a §3.8.4.1.3: the PIX Manager
cross-references the identifiers it receives); the INS is the anchor: a group holds at most one
INS per INS authority, so an identifier fed with an INS other than the one its group has
leaves that group for the INS's (the source's latest statement wins) instead of welding two
persons together.

Merge (ITI TF-2a §3.8.4.2, §3.8.4.2.3; ITI-44 PRPA_IN201304UV02): the subsumed identifier is
no longer a valid identifier — it is kept as a `merged` identity pointing at the surviving one
(history, plus one row per merge in the merge history), is answered by no query, and a query
for it is UnknownIdentifier; the rest of its group joins the surviving identifier's group.
When both are affinity-domain (INS) ids, the registry answers the subsumed id's objects under
the surviving id and forgets the subsumed id (registry.store.merge).

Validation is the same for both adapters (`validate_record`), done before anything is written:
a failed feed or merge stores nothing.
"""

from __future__ import annotations

import json
import threading
import uuid
from typing import Callable, Iterable, Mapping, Sequence

import attrs
from sqlalchemy import and_, bindparam, insert, or_, select, text, tuple_, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from pix.ins import InsPolicy, is_ins_oid
from pix.xref import (
    Demographics,
    Identifier,
    InvalidIdentifier,
    PatientRecord,
    PixError,
    UnknownDomain,
    UnknownIdentifier,
    XrefChange,
)
from pix.schema import pix_identity, pix_merge
from registry.errors import InfrastructureError
from registry.schema import patient
from registry.store.merge import merge_registry_patient
from registry.timefmt import now_dtm

Key = tuple[str, str]  # (authority OID, value)

STATUS_ACTIVE = "active"
STATUS_MERGED = "merged"


def key_of(identifier: Identifier) -> Key:
    return (identifier.authority, identifier.value)


# --- validation (shared) ---------------------------------------------------------------------


def _check_identifier(
    identifier: Identifier,
    domains: frozenset[str],
    policy: InsPolicy,
    reliability: Sequence[str] | None,
    location: str,
) -> None:
    """CX.1 and CX.4 present; an INS passes the INS rules (with `reliability` when it is fed;
    None: only the authority is checked, e.g. a merge's subsumed id); otherwise a known domain."""
    if not identifier.value.strip():
        raise InvalidIdentifier("identifier without CX.1 (ID number)", location=location, hl7_code="101")
    if not identifier.authority.strip():
        raise InvalidIdentifier(
            f"identifier {identifier.value!r} without CX.4 (assigning authority universal id)",
            location=location,
            hl7_code="101",
        )
    if is_ins_oid(identifier.authority):
        if reliability is None:
            if identifier.authority not in policy.accepted_oids:
                raise InvalidIdentifier(
                    f"INS authority {identifier.authority} is not accepted by this deployment",
                    location=location,
                )
            return
        policy.check(identifier, reliability, location=location)
        return
    if identifier.authority not in domains:
        raise UnknownDomain(
            f"assigning authority {identifier.authority} is not a known domain", location=location
        )


def validate_record(
    record: PatientRecord, domains: frozenset[str], policy: InsPolicy, location: str = "PID-3"
) -> tuple[Identifier, ...]:
    """The record's identifiers, checked and de-duplicated (first occurrence wins); raises
    InvalidIdentifier / UnknownDomain. An empty list, or two INS of one INS authority, are
    invalid."""
    if not record.identifiers:
        raise InvalidIdentifier("no patient identifier", location=location, hl7_code="101")
    seen: dict[Key, Identifier] = {}
    for identifier in record.identifiers:
        _check_identifier(identifier, domains, policy, record.identity_reliability, location)
        seen.setdefault(key_of(identifier), identifier)
    ins_authorities = [k[0] for k in seen if is_ins_oid(k[0])]
    if len(ins_authorities) != len(set(ins_authorities)):
        raise InvalidIdentifier("two different INS of one INS authority in one record", location=location)
    return tuple(seen.values())


def merge_parties(surviving: PatientRecord, subsumed: Identifier, domains: frozenset[str], policy: InsPolicy
                  ) -> tuple[tuple[Identifier, ...], Identifier]:
    """The checks of a merge, before any store is touched: the surviving record's identifiers
    (validated as a feed's), the subsumed one (MRG-1) of a known domain, and the surviving
    identifier it merges into, which must be another one."""
    identifiers = validate_record(surviving, domains, policy)
    _check_identifier(subsumed, domains, policy, None, "MRG-1")
    survivor = surviving_identifier(identifiers, subsumed)
    if key_of(survivor) == key_of(subsumed):
        raise InvalidIdentifier("MRG-1 names the surviving identifier itself", location="MRG-1")
    return identifiers, survivor


def surviving_identifier(surviving: tuple[Identifier, ...], subsumed: Identifier) -> Identifier:
    """Which identifier of the surviving record (PID-3) the subsumed one (MRG-1) merges into:
    one of its own authority (ITI TF-2a §3.8.4.2: MRG-1 and PID-3 name one domain); for an INS,
    the record's INS (a NIA merged into the NIR); else the first identifier of PID-3."""
    for identifier in surviving:
        if identifier.authority == subsumed.authority:
            return identifier
    if is_ins_oid(subsumed.authority):
        for identifier in surviving:
            if is_ins_oid(identifier.authority):
                return identifier
    return surviving[0]


# --- linking (shared, pure) ------------------------------------------------------------------


def _ins_keys(keys: Iterable[Key]) -> set[Key]:
    return {k for k in keys if is_ins_oid(k[0])}


def _conflicts(members: Iterable[Key], ins: set[Key]) -> bool:
    """`members` hold an INS of an authority of `ins` other than the one in `ins`."""
    authorities = {k[0] for k in ins}
    return any(k[0] in authorities and k not in ins for k in _ins_keys(members))


@attrs.frozen
class LinkPlan:
    """Where the identifiers of one feed go: `target` (an existing group, or None for a new
    one) receives `moves` (keys, some perhaps not yet stored)."""

    target: object | None
    moves: tuple[Key, ...]


def plan_link(record_keys: Sequence[Key], group_of: Mapping[Key, object],
              members: Mapping[object, Iterable[Key]]) -> LinkPlan:
    """Link `record_keys` into one group. `group_of` gives the group of each *active* stored
    identity among them, `members` every active member of those groups.

    The target is the group of the record's first stored INS, else of its first stored
    identifier — skipping any group holding another INS of an authority the record carries
    (then a new group). Every other touched group joins the target whole, unless it holds an
    INS conflicting with the target's: then only the record's identifiers leave it."""
    record_ins = _ins_keys(record_keys)
    candidates = [group_of[k] for k in record_keys if k in record_ins and k in group_of]
    candidates += [group_of[k] for k in record_keys if k in group_of]
    target = next((g for g in candidates if not _conflicts(members[g], record_ins)), None)
    target_ins = record_ins | (_ins_keys(members[target]) if target is not None else set())
    moves: dict[Key, None] = {}
    for k in record_keys:
        if group_of.get(k) != target or target is None:
            moves[k] = None
    for g in dict.fromkeys(group_of[k] for k in record_keys if k in group_of):
        if g == target:
            continue
        if not _conflicts(members[g], target_ins):
            for k in members[g]:
                moves[k] = None
    return LinkPlan(target, tuple(moves))


def demographics_json(demographics: Demographics) -> str:
    """Demographics as received, as JSON text (the SQL adapter's `demographics` column)."""
    return json.dumps(
        {
            "family_name": demographics.family_name,
            "given_names": list(demographics.given_names),
            "birth_date": demographics.birth_date,
            "sex": demographics.sex,
            "birth_place": demographics.birth_place,
            "extra": dict(demographics.extra),
        },
        ensure_ascii=False,
        sort_keys=True,
    )


def demographics_from_json(text: str | None) -> Demographics:
    if not text:
        return Demographics()
    data = json.loads(text)
    return Demographics(
        family_name=data.get("family_name", ""),
        given_names=tuple(data.get("given_names", ())),
        birth_date=data.get("birth_date", ""),
        sex=data.get("sex", ""),
        birth_place=data.get("birth_place", ""),
        extra=dict(data.get("extra", {})),
    )


def _sorted_group(identifiers: Iterable[Identifier]) -> tuple[Identifier, ...]:
    return tuple(sorted(identifiers, key=lambda i: (i.authority, i.value)))


def _query_domains(identifier: Identifier, domains: Sequence[str], known: frozenset[str]) -> None:
    if not identifier.value.strip():
        raise InvalidIdentifier("identifier without CX.1 (ID number)", location="QPD-3", hl7_code="101")
    if not identifier.authority.strip():
        raise InvalidIdentifier(
            f"identifier {identifier.value!r} without CX.4 (assigning authority)",
            location="QPD-3",
            hl7_code="101",
        )
    # ITI TF-2a §3.9.4.2.2.6: an unrecognised domain in QPD-3 or QPD-4 → AE, ERR 204
    if identifier.authority not in known:
        raise UnknownDomain(
            f"assigning authority {identifier.authority} is not a known domain", location="QPD-3"
        )
    for domain in domains:
        if domain not in known:
            raise UnknownDomain(f"domain {domain} (QPD-4) is not a known domain", location="QPD-4")


# --- the in-memory fake ----------------------------------------------------------------------


@attrs.define
class _Identity:
    identifier: Identifier
    demographics: Demographics
    reliability: tuple[str, ...]
    status: str
    group: int | None
    merged_into: Key | None = None
    created_at: str = ""
    updated_at: str = ""


@attrs.frozen
class MergeRecord:
    """One merge, as history keeps it."""

    subsumed: Identifier
    surviving: Identifier
    previous_group: tuple[Identifier, ...]
    merged_at: str


class MemoryCrossReferences:
    """The in-memory fake of the port (same semantics as `SqlCrossReferences`, no database).
    Its "registry" is the set of affinity-domain patient ids it made known (`is_known`)."""

    def __init__(
        self,
        domains: Iterable[str],
        ins_policy: InsPolicy,
        *,
        now: Callable[[], str] = now_dtm,
        known_patients: Iterable[str] = (),
    ) -> None:
        self._domains = frozenset(domains)
        self._policy = ins_policy
        self._known = frozenset(self._domains | ins_policy.accepted_oids)
        self._now = now
        self._lock = threading.Lock()
        self._identities: dict[Key, _Identity] = {}
        self._groups: dict[int, set[Key]] = {}
        self._next_group = 1
        self._registered: set[str] = set(known_patients)
        self.merges: list[MergeRecord] = []

    # the port ------------------------------------------------------------------------------

    def known_domains(self) -> frozenset[str]:
        return self._known

    def feed(self, record: PatientRecord) -> XrefChange:
        identifiers = validate_record(record, self._domains, self._policy)
        with self._lock:
            touched, registered = self._feed(identifiers, record)
            return XrefChange(groups=self._groups_out(touched), registered=tuple(registered))

    def feed_many(self, records: Sequence[PatientRecord]) -> list[XrefChange | PixError]:
        """`feed` of each record in order; a failing record gives its error, the others apply."""
        out: list[XrefChange | PixError] = []
        for record in records:
            try:
                out.append(self.feed(record))
            except PixError as exc:
                out.append(exc)
        return out

    def merge(self, surviving: PatientRecord, subsumed: Identifier) -> XrefChange:
        identifiers, survivor = merge_parties(surviving, subsumed, self._domains, self._policy)
        with self._lock:
            touched, registered = self._feed(identifiers, surviving)
            target = self._identities[key_of(survivor)].group
            now = self._now()
            gone = self._identities.get(key_of(subsumed))
            previous: tuple[Identifier, ...] = ()
            if gone is not None and gone.status == STATUS_ACTIVE:
                old = gone.group
                self._groups[old].discard(key_of(subsumed))
                previous = _sorted_group(self._identities[k].identifier for k in self._groups[old])
                if old != target:
                    rest = self._groups[old]
                    target_ins = _ins_keys(self._groups[target])
                    if not _conflicts(rest, target_ins):
                        for k in list(rest):
                            self._move(k, target)
                    touched.append(old)
                gone.status, gone.group, gone.updated_at = STATUS_MERGED, None, now
                gone.merged_into = key_of(survivor)
            elif gone is not None:  # merged before: it now points at this survivor
                gone.merged_into, gone.updated_at = key_of(survivor), now
            else:  # never fed: kept for history all the same
                self._identities[key_of(subsumed)] = _Identity(
                    subsumed, Demographics(), (), STATUS_MERGED, None, key_of(survivor), now, now
                )
            self.merges.append(MergeRecord(subsumed, survivor, previous, now))
            retired: tuple[str, ...] = ()
            if is_ins_oid(subsumed.authority) and is_ins_oid(survivor.authority):
                # ITI TF-2a §3.8.4.2.3: the registry answers under the surviving id only
                self._registered.discard(subsumed.xds_cx())
                retired = (subsumed.xds_cx(),)
            return XrefChange(
                groups=self._groups_out(touched), registered=tuple(registered), retired=retired
            )

    def query(self, identifier: Identifier, domains: Sequence[str] = ()) -> tuple[Identifier, ...]:
        _query_domains(identifier, domains, self._known)
        with self._lock:
            found = self._identities.get(key_of(identifier))
            if found is None or found.status != STATUS_ACTIVE:
                raise UnknownIdentifier(
                    f"{identifier.value} of {identifier.authority} is not known", location="QPD-3"
                )
            wanted = frozenset(domains)
            return _sorted_group(
                self._identities[k].identifier
                for k in self._groups[found.group]
                if k != key_of(identifier) and (not wanted or k[0] in wanted)
            )

    def is_known(self, patient_id: str) -> bool:
        with self._lock:
            return patient_id in self._registered

    # extras for tests and tools ------------------------------------------------------------

    def demographics(self, identifier: Identifier) -> Demographics | None:
        found = self._identities.get(key_of(identifier))
        return None if found is None else found.demographics

    def status(self, identifier: Identifier) -> str | None:
        found = self._identities.get(key_of(identifier))
        return None if found is None else found.status

    # internals (under the lock) ------------------------------------------------------------

    def _move(self, k: Key, group: int) -> None:
        entry = self._identities[k]
        if entry.group is not None:
            self._groups[entry.group].discard(k)
        self._groups[group].add(k)
        entry.group = group

    def _feed(self, identifiers: tuple[Identifier, ...], record: PatientRecord) -> tuple[list[int], list[str]]:
        now = self._now()
        keys = [key_of(i) for i in identifiers]
        group_of = {
            k: self._identities[k].group
            for k in keys
            if k in self._identities and self._identities[k].status == STATUS_ACTIVE
        }
        plan = plan_link(keys, group_of, {g: set(self._groups[g]) for g in group_of.values()})
        target = plan.target
        if target is None:
            target = self._next_group
            self._next_group += 1
            self._groups[target] = set()
        left = {self._identities[k].group for k in plan.moves if k in group_of} - {target}
        for identifier in identifiers:
            k = key_of(identifier)
            entry = self._identities.get(k)
            if entry is None:
                entry = _Identity(identifier, record.demographics, record.identity_reliability,
                                  STATUS_ACTIVE, None, None, now, now)
                self._identities[k] = entry
            else:
                entry.identifier, entry.demographics = identifier, record.demographics
                entry.reliability, entry.updated_at = record.identity_reliability, now
                entry.status, entry.merged_into = STATUS_ACTIVE, None
        for k in plan.moves:
            self._move(k, target)
        registered = []
        for identifier in identifiers:
            if is_ins_oid(identifier.authority) and identifier.xds_cx() not in self._registered:
                self._registered.add(identifier.xds_cx())
                registered.append(identifier.xds_cx())
        return [target, *sorted(left)], registered

    def _groups_out(self, touched: Iterable[int]) -> tuple[tuple[Identifier, ...], ...]:
        out = []
        for g in dict.fromkeys(touched):
            members = self._groups.get(g)
            if members:
                out.append(_sorted_group(self._identities[k].identifier for k in members))
        return tuple(out)


# --- the real adapter (SQLAlchemy Core: SQLite, PostgreSQL) ----------------------------------

_ATTEMPTS = 3  # a transaction losing a uniqueness race is run again on fresh data


def _identifier_of(row) -> Identifier:
    return Identifier(value=row.value, authority=row.authority, namespace=row.namespace,
                      type_code=row.type_code)


def _row_key(row) -> Key:
    return (row.authority, row.value)


def _new_group() -> str:
    return uuid.uuid4().hex


def _statements():
    """The adapter's statements, built once (SQLAlchemy then only looks up their compiled form)."""
    t = pix_identity.c
    q, m = pix_identity.alias("q"), pix_identity.alias("m")
    fields = ("status", "merged_into_authority", "merged_into_value", "identity_reliability",
              "demographics", "updated_at", "group_id", "namespace", "type_code")
    return (
        select(pix_identity).where(tuple_(t.authority, t.value).in_(bindparam("keys", expanding=True))),
        select(t.authority, t.value, t.namespace, t.type_code, t.group_id).where(
            t.group_id.in_(bindparam("groups", expanding=True)), t.status == STATUS_ACTIVE
        ),
        insert(pix_identity),
        update(pix_identity)
        .where(t.authority == bindparam("b_authority"), t.value == bindparam("b_value"))
        .values({f: bindparam(f) for f in fields}),
        # ITI-9 / ITI-45 in one statement: every active member of the queried identifier's
        # group (itself included; none when it is unknown or merged)
        select(m.c.authority, m.c.value, m.c.namespace, m.c.type_code)
        .select_from(q.join(m, and_(m.c.group_id == q.c.group_id, m.c.status == STATUS_ACTIVE)))
        .where(q.c.authority == bindparam("authority"), q.c.value == bindparam("value"),
               q.c.status == STATUS_ACTIVE),
        select(t.authority, t.value).where(tuple_(t.authority, t.value).in_(bindparam("keys", expanding=True))),
        text("SELECT pg_advisory_xact_lock(hashtext(k)) FROM unnest(CAST(:keys AS text[]))"
             " WITH ORDINALITY AS u(k, n) ORDER BY n"),
        update(pix_identity).where(text("1 = 0")).values(status=pix_identity.c.status),
    )


_BY_KEYS, _MEMBERS, _INSERT, _UPDATE, _GROUP_OF, _STORED_KEYS, _PG_LOCKS, _SQLITE_WRITE_LOCK = _statements()
_PG_STORED_KEYS = text(
    # a join on the primary key, whatever the table's size: a long `(authority, value) IN (…)`
    # list was planned as a sequential scan on PostgreSQL (its cost grew with the table)
    "SELECT p.authority, p.value FROM unnest(CAST(:a AS text[]), CAST(:v AS text[])) AS k(a, v)"
    " JOIN pix_identity p ON p.authority = k.a AND p.value = k.v"
)


def _stored_keys(c: Connection, keys: Sequence[Key]) -> set[Key]:
    """Which of `keys` have a pix_identity row (any status), in one statement."""
    unique = list(dict.fromkeys(keys))
    if c.dialect.name == "postgresql":
        rows = c.execute(_PG_STORED_KEYS, {"a": [k[0] for k in unique], "v": [k[1] for k in unique]})
    else:
        rows = c.execute(_STORED_KEYS, {"keys": unique})
    return {_row_key(r) for r in rows}


_PATIENT_INSERTS: dict[str, object] = {}


def _insert_patients(c: Connection, cxs: Sequence[str], now: str) -> set[str]:
    """Make the XDS patient ids `cxs` known to the registry (its `patient` table) on the
    caller's transaction, idempotently and race-free like registry.store.merge.insert_patient
    (INSERT … ON CONFLICT DO NOTHING), in one statement; the ones that were new."""
    if not cxs:
        return set()
    statement = _PATIENT_INSERTS.get(c.dialect.name)
    if statement is None:
        if c.dialect.name == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        statement = _PATIENT_INSERTS[c.dialect.name] = (
            dialect_insert(patient)
            .values(patient_id=bindparam("cx"), created_at=bindparam("now"))
            .on_conflict_do_nothing(index_elements=[patient.c.patient_id])
            .returning(patient.c.patient_id)
        )
    unique = list(dict.fromkeys(cxs))
    if len(unique) == 1:
        return set(c.execute(statement, {"cx": unique[0], "now": now}).scalars())
    return set(c.execute(statement, [{"cx": cx, "now": now} for cx in unique]).scalars())


def _with_registered(change: XrefChange, ins: Sequence[str], new: set[str]) -> XrefChange:
    """`change` with those of its record's INS (`ins`) that `new` holds, as feed would have
    answered; `new` is consumed, so the first record of a batch carrying a new INS registers it."""
    mine = tuple(cx for cx in dict.fromkeys(ins) if cx in new)
    if not mine:
        return change
    new.difference_update(mine)
    return attrs.evolve(change, registered=mine)


class SqlCrossReferences:
    """The cross-reference store on the registry's database (pix/schema.py): a feed making an
    INS known to the registry, and a merge rewriting the registry, commit in the same database
    transaction as the cross-references. Database failures raise the registry's
    InfrastructureError (never a PIX domain error)."""

    def __init__(
        self,
        engine: Engine,
        domains: Iterable[str],
        ins_policy: InsPolicy,
        *,
        now: Callable[[], str] = now_dtm,
    ) -> None:
        self.engine = engine
        self._domains = frozenset(domains)
        self._policy = ins_policy
        self._known = frozenset(self._domains | ins_policy.accepted_oids)
        self._now = now

    # the port ------------------------------------------------------------------------------

    def known_domains(self) -> frozenset[str]:
        return self._known

    def feed(self, record: PatientRecord) -> XrefChange:
        identifiers = validate_record(record, self._domains, self._policy)
        result = self._feed_validated([(record, identifiers)])[0]
        if isinstance(result, Exception):
            raise result
        return result

    def feed_many(self, records: Sequence[PatientRecord]) -> list[XrefChange | PixError | InfrastructureError]:
        """Feed several records, in order, in ONE database transaction (one commit): each record
        keeps its own all-or-nothing semantics — one that fails validation (PixError) is not
        written, one whose statements fail (InfrastructureError) is rolled back alone to its
        SAVEPOINT — and the others commit together. One result per record, in order: its
        XrefChange, or the error it would have raised from `feed`. Nothing is committed before
        the method returns (an acknowledgment sent after it covers a committed record). A later
        record sees the earlier ones (same transaction). If the commit itself fails, every record
        that was to be written gets the InfrastructureError."""
        results: list = [None] * len(records)
        todo: list[tuple[int, PatientRecord, tuple[Identifier, ...]]] = []
        for n, record in enumerate(records):
            try:
                todo.append((n, record, validate_record(record, self._domains, self._policy)))
            except PixError as exc:
                results[n] = exc
        if todo:
            for (n, _, _), result in zip(todo, self._feed_validated([(r, i) for _, r, i in todo])):
                results[n] = result
        return results

    def _feed_validated(
        self, items: Sequence[tuple[PatientRecord, tuple[Identifier, ...]]]
    ) -> list[XrefChange | InfrastructureError]:
        """One transaction for validated records (results in order)."""
        keys = [key_of(i) for _, identifiers in items for i in identifiers]
        # Several records: first without savepoints (two round trips fewer per record on
        # PostgreSQL); if any statement fails, that transaction is rolled back whole and the
        # batch runs again with a SAVEPOINT per record, so that only the failing record is lost.
        # One record: its transaction is its savepoint.
        guarded = len(items) == 1
        for attempt in range(_ATTEMPTS + 1):
            out: list[XrefChange | InfrastructureError] = []
            try:
                with self.engine.begin() as c:
                    self._serialise(c, keys)  # every key of the batch, sorted: no deadlock
                    now = self._now()
                    if guarded and len(items) > 1:
                        out = [self._feed_in_savepoint(c, i, r, now) for r, i in items]
                    elif guarded:
                        out = [self._feed_change(c, i, r, now) for r, i in items]
                    else:
                        # Which of the batch's identifiers are stored at all, in one statement
                        # (the locks taken above keep it true): a record none of whose
                        # identifiers is stored, nor written earlier in the batch, is a new
                        # person and needs no look-up. The registry's new patients of the
                        # whole batch are inserted in one statement at the end.
                        seen = _stored_keys(c, keys)
                        ins: list[list[str]] = [[] for _ in items]
                        out = []
                        for n, (r, i) in enumerate(items):
                            record_keys = {key_of(x) for x in i}
                            fresh = seen.isdisjoint(record_keys)
                            seen |= record_keys
                            out.append(self._feed_change(c, i, r, now, ins[n], fresh=fresh))
                        new = _insert_patients(c, [cx for cxs in ins for cx in cxs], now)
                        out = [_with_registered(change, cxs, new) for change, cxs in zip(out, ins)]
                return out
            except SQLAlchemyError as exc:
                if not guarded:
                    guarded = True
                    continue
                if isinstance(exc, IntegrityError) and attempt < _ATTEMPTS:
                    continue  # lost a race (same new identifier inserted concurrently): retry
                return [InfrastructureError(f"PIX feed failed: {exc}")] * len(items)
        raise AssertionError("unreachable")  # pragma: no cover

    def _feed_in_savepoint(
        self, c: Connection, identifiers: tuple[Identifier, ...], record: PatientRecord, now: str
    ) -> XrefChange | InfrastructureError:
        for attempt in range(_ATTEMPTS):
            try:
                with c.begin_nested():
                    return self._feed_change(c, identifiers, record, now)
            except IntegrityError as exc:
                if attempt + 1 < _ATTEMPTS:
                    continue  # rolled back to the savepoint; read again and retry
                return InfrastructureError(f"PIX feed failed: {exc}")
            except SQLAlchemyError as exc:
                return InfrastructureError(f"PIX feed failed: {exc}")
        raise AssertionError("unreachable")  # pragma: no cover

    def _feed_change(
        self, c: Connection, identifiers: tuple[Identifier, ...], record: PatientRecord, now: str,
        deferred_patients: list[str] | None = None, *, fresh: bool = False,
    ) -> XrefChange:
        _touched, registered, groups = self._feed(c, identifiers, record, now, deferred_patients, fresh=fresh)
        return XrefChange(groups=groups, registered=tuple(registered))

    def merge(self, surviving: PatientRecord, subsumed: Identifier) -> XrefChange:
        identifiers, survivor = merge_parties(surviving, subsumed, self._domains, self._policy)

        def work(c: Connection) -> XrefChange:
            self._serialise(c, [key_of(i) for i in identifiers] + [key_of(subsumed)])
            now = self._now()
            touched, registered, _groups = self._feed(c, identifiers, surviving, now)
            both_ins = is_ins_oid(subsumed.authority) and is_ins_oid(survivor.authority)
            touched += self._retire(c, subsumed, survivor, now, registry_merged=both_ins)
            retired: tuple[str, ...] = ()
            if both_ins:
                # ITI TF-2a §3.8.4.2.3: the registry answers under the surviving id only
                merge_registry_patient(c, subsumed.xds_cx(), survivor.xds_cx(), now=now)
                retired = (subsumed.xds_cx(),)
            return XrefChange(
                groups=self._groups_out(c, touched), registered=tuple(registered), retired=retired
            )

        return self._transaction(work, "merge")

    def query(self, identifier: Identifier, domains: Sequence[str] = ()) -> tuple[Identifier, ...]:
        _query_domains(identifier, domains, self._known)
        try:
            # one statement, outside any transaction (no BEGIN / ROLLBACK round trips)
            with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as c:
                rows = c.execute(_GROUP_OF, {"authority": identifier.authority, "value": identifier.value}).all()
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"PIX query failed: {exc}") from exc
        if not rows:
            raise UnknownIdentifier(f"{identifier.value} of {identifier.authority} is not known", location="QPD-3")
        me, wanted = key_of(identifier), frozenset(domains)
        return _sorted_group(
            _identifier_of(r) for r in rows
            if _row_key(r) != me and (not wanted or r.authority in wanted)
        )

    def is_known(self, patient_id: str) -> bool:
        try:
            with self.engine.connect() as c:
                return c.execute(
                    select(patient.c.patient_id).where(patient.c.patient_id == patient_id)
                ).first() is not None
        except SQLAlchemyError as exc:
            raise InfrastructureError(f"patient look-up failed: {exc}") from exc

    # extras for tests and tools ------------------------------------------------------------

    def demographics(self, identifier: Identifier) -> Demographics | None:
        row = self._row(identifier)
        return None if row is None else demographics_from_json(row.demographics)

    def status(self, identifier: Identifier) -> str | None:
        row = self._row(identifier)
        return None if row is None else row.status

    def merge_history(self, identifier: Identifier) -> list[dict]:
        """Merges `identifier` took part in (subsumed or surviving), oldest first."""
        m = pix_merge.c
        with self.engine.connect() as c:
            rows = c.execute(
                select(pix_merge)
                .where(
                    or_(
                        and_(m.subsumed_authority == identifier.authority, m.subsumed_value == identifier.value),
                        and_(m.surviving_authority == identifier.authority, m.surviving_value == identifier.value),
                    )
                )
                .order_by(m.id)
            ).mappings().all()
        return [dict(r) for r in rows]

    def _row(self, identifier: Identifier):
        t = pix_identity.c
        with self.engine.connect() as c:
            return c.execute(
                select(pix_identity).where(t.authority == identifier.authority, t.value == identifier.value)
            ).first()

    # transactions --------------------------------------------------------------------------

    def _transaction(self, work: Callable[[Connection], XrefChange], what: str) -> XrefChange:
        for attempt in range(_ATTEMPTS):
            try:
                with self.engine.begin() as c:
                    return work(c)
            except IntegrityError as exc:
                if attempt + 1 < _ATTEMPTS:
                    continue  # lost a race (same new identifier inserted concurrently): retry
                raise InfrastructureError(f"PIX {what} failed: {exc}") from exc
            except SQLAlchemyError as exc:
                raise InfrastructureError(f"PIX {what} failed: {exc}") from exc
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    def _serialise(c: Connection, keys: Sequence[Key]) -> None:
        """Serialise writers touching the same identifiers before reading them. PostgreSQL: a
        transaction-scoped advisory lock per identifier (sorted: no deadlock between two feeds).
        SQLite: take the database write lock now (a write statement, even one changing no row),
        so what is read is what is written over (busy_timeout makes others wait)."""
        if c.dialect.name == "postgresql":
            # one round trip: the locks are taken in array order (a function scan WITH ORDINALITY
            # yields the rows in order; the volatile lock function is evaluated per row)
            locks = [f"pix\x1f{authority}\x1f{value}" for authority, value in sorted(set(keys))]
            c.execute(_PG_LOCKS, {"keys": locks})
        else:
            c.execute(_SQLITE_WRITE_LOCK)

    # internals (inside a transaction) ------------------------------------------------------

    @staticmethod
    def _active_groups(c: Connection, keys: Sequence[Key]) -> tuple[dict, dict[Key, object], dict]:
        rows, group_of, members, _known = SqlCrossReferences._lookup(c, keys)
        return rows, group_of, {g: set(m) for g, m in members.items()}

    @staticmethod
    def _lookup(c: Connection, keys: Sequence[Key]) -> tuple[dict, dict[Key, object], dict, dict[Key, Identifier]]:
        """The stored rows of `keys`, the group of each active one, the active members of those
        groups (group → keys) and the identifier of every member (two statements at most)."""
        rows = {_row_key(r): r for r in c.execute(_BY_KEYS, {"keys": list(keys)})}
        group_of = {k: r.group_id for k, r in rows.items() if r.status == STATUS_ACTIVE}
        members: dict[object, dict[Key, None]] = {g: {} for g in group_of.values()}
        known: dict[Key, Identifier] = {}
        if members:
            for r in c.execute(_MEMBERS, {"groups": list(members)}):
                k = _row_key(r)
                members[r.group_id][k] = None
                known[k] = _identifier_of(r)
        return rows, group_of, members, known

    def _feed(
        self, c: Connection, identifiers: tuple[Identifier, ...], record: PatientRecord, now: str,
        deferred_patients: list[str] | None = None, *, fresh: bool = False,
    ) -> tuple[list, list[str], tuple[tuple[Identifier, ...], ...]]:
        """Store and link one validated record: (groups touched, patient ids made known to the
        registry, the touched groups' identifiers after the change — computed from what was read
        and written, in the order `_groups_out` would read them)."""
        keys = [key_of(i) for i in identifiers]
        if fresh:  # the caller knows none of them is stored
            rows, group_of, members, known = {}, {}, {}, {}
        else:
            rows, group_of, members, known = self._lookup(c, keys)
        plan = plan_link(keys, group_of, members)
        target = plan.target if plan.target is not None else _new_group()
        left = sorted({group_of[k] for k in plan.moves if k in group_of} - {target})
        fields = {
            "status": STATUS_ACTIVE,
            "merged_into_authority": None,
            "merged_into_value": None,
            "identity_reliability": "~".join(record.identity_reliability),
            "demographics": demographics_json(record.demographics),
            "updated_at": now,
            "group_id": target,
        }
        new = [
            {"authority": i.authority, "value": i.value, "namespace": i.namespace,
             "type_code": i.type_code, "created_at": now, **fields}
            for i in identifiers
            if key_of(i) not in rows
        ]
        if new:
            c.execute(_INSERT, new)
        old = [
            {"b_authority": i.authority, "b_value": i.value, "namespace": i.namespace,
             "type_code": i.type_code, **fields}
            for i in identifiers
            if key_of(i) in rows
        ]
        if old:
            c.execute(_UPDATE, old)
        record_keys = set(keys)
        others = [k for k in plan.moves if k not in record_keys]
        if others:
            self._move(c, others, target, now)
        ins = [i.xds_cx() for i in identifiers if is_ins_oid(i.authority)]
        if deferred_patients is not None:  # the caller inserts them (one statement for a batch)
            deferred_patients.extend(ins)
            registered = []
        else:
            registered = [cx for cx in ins if _insert_patients(c, [cx], now)]
        # the groups after the change: the target holds its members, the moved keys and the
        # record's identifiers (as fed now); a group left keeps its members not moved
        moved = set(plan.moves) | record_keys
        known.update((key_of(i), i) for i in identifiers)
        after = [list(members.get(target, {})) + list(plan.moves) + keys]
        after += [[k for k in members[g] if k not in moved] for g in left]
        groups = tuple(_sorted_group(known[k] for k in dict.fromkeys(g)) for g in after if g)
        return [target, *left], registered, groups

    @staticmethod
    def _move(c: Connection, keys: Sequence[Key], group: object, now: str) -> None:
        if not keys:
            return
        t = pix_identity.c
        c.execute(
            update(pix_identity)
            .where(t.authority == bindparam("b_authority"), t.value == bindparam("b_value"))
            .values(group_id=group, updated_at=now),
            [{"b_authority": a, "b_value": v} for a, v in keys],
        )

    def _retire(
        self, c: Connection, subsumed: Identifier, survivor: Identifier, now: str, *, registry_merged: bool
    ) -> list:
        """Make `subsumed` a merged identity pointing at `survivor`, move the rest of its group
        into the survivor's (unless an INS conflicts), record the merge; the groups touched."""
        t = pix_identity.c
        rows, group_of, members = self._active_groups(c, [key_of(subsumed), key_of(survivor)])
        target = group_of[key_of(survivor)]
        sk = key_of(subsumed)
        touched: list = []
        previous_group, previous = None, []
        pointer = {"merged_into_authority": survivor.authority, "merged_into_value": survivor.value}
        if sk in group_of:
            previous_group = group_of[sk]
            rest = members[previous_group] - {sk}
            previous = sorted(rest)
            if previous_group != target:
                if not _conflicts(rest, _ins_keys(members[target])):
                    self._move(c, sorted(rest), target, now)
                touched.append(previous_group)
            c.execute(
                update(pix_identity)
                .where(t.authority == subsumed.authority, t.value == subsumed.value)
                .values(status=STATUS_MERGED, group_id=None, updated_at=now, **pointer)
            )
        elif sk in rows:  # merged before: it now points at this survivor
            c.execute(
                update(pix_identity)
                .where(t.authority == subsumed.authority, t.value == subsumed.value)
                .values(updated_at=now, **pointer)
            )
        else:  # never fed: kept for history all the same
            c.execute(
                insert(pix_identity).values(
                    authority=subsumed.authority, value=subsumed.value, namespace=subsumed.namespace,
                    type_code=subsumed.type_code, group_id=None, status=STATUS_MERGED,
                    identity_reliability="", demographics=demographics_json(Demographics()),
                    created_at=now, updated_at=now, **pointer,
                )
            )
        c.execute(
            insert(pix_merge).values(
                subsumed_authority=subsumed.authority, subsumed_value=subsumed.value,
                surviving_authority=survivor.authority, surviving_value=survivor.value,
                previous_group_id=previous_group, previous_group=json.dumps([list(k) for k in previous]),
                registry_merged=1 if registry_merged else 0, merged_at=now,
            )
        )
        return touched

    @staticmethod
    def _groups_out(c: Connection, touched: Sequence) -> tuple[tuple[Identifier, ...], ...]:
        wanted = list(dict.fromkeys(touched))
        if not wanted:
            return ()
        t = pix_identity.c
        by_group: dict[object, list[Identifier]] = {}
        for r in c.execute(
            select(pix_identity).where(t.group_id.in_(wanted), t.status == STATUS_ACTIVE)
        ):
            by_group.setdefault(r.group_id, []).append(_identifier_of(r))
        return tuple(_sorted_group(by_group[g]) for g in wanted if by_group.get(g))


__all__ = [
    "LinkPlan",
    "MemoryCrossReferences",
    "MergeRecord",
    "SqlCrossReferences",
    "demographics_from_json",
    "demographics_json",
    "plan_link",
    "surviving_identifier",
    "validate_record",
]
