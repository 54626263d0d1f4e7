"""The Find queries' selects are built once per shape of their parameters and executed with the
values bound (`registry.queries.plans._fetch_shaped`). Whatever the parameters, the select so
executed must be the select built from the values: compared here as the SQL each renders with
its values inlined, on both dialects, for the first query of a shape (built) and the next (cached)."""

from __future__ import annotations

from hypothesis import given, settings, strategies as st
from sqlalchemy import insert
from sqlalchemy.dialects import postgresql, sqlite

from registry import constants as C
from registry.model import Slot
from registry.queries import plans
from registry.queries.params import SPECS, Kind, parse_parameters
from registry.schema import document_author, document_entry
from registry.store import RegistryStore

from iti18.sq import q, ql

DIALECTS = (postgresql.dialect(), sqlite.dialect())
FIND = {
    C.SQ_FIND_DOCUMENTS: plans.find_documents_select,
    C.SQ_FIND_DOCUMENTS_BY_REFERENCE_ID: plans.find_documents_select,
    C.SQ_FIND_SUBMISSION_SETS: plans.find_submission_sets_select,
    C.SQ_FIND_FOLDERS: plans.find_folders_select,
}

text = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")) | st.sampled_from("%_\\'^&"), max_size=12)
timestamp = st.from_regex(r"\A(19|20)[0-9]{2}(0[1-9]|1[0-2])(0[1-9]|1[0-9]|2[0-8])([01][0-9]|2[0-3])[0-5][0-9][0-5][0-9]\Z")
# A code ending in "^" would read differently: "^" + "^^" + "0" is code "" and scheme "^0" (the value
# splits at its first "^^").
code = st.builds(lambda c, s: f"{c}^^{s}", text.filter(lambda t: t and "^^" not in t and not t.endswith("^")),
                 text.filter(lambda t: "^^" not in t and t))


def _slot_values(kind: Kind, and_or: bool, draw, single: bool = False) -> list[str]:
    """The slot value(s) of one parameter: one slot, or several for an AND/OR parameter; one
    value for a single-valued list kind ($XDSSubmissionSetAuthorPerson)."""
    if kind is Kind.STRING:
        return [q(draw(text.filter(bool)))]
    if kind is Kind.TIME:
        return [draw(timestamp)]
    if kind is Kind.NUMBER:
        return [str(draw(st.sampled_from((1, 2))))]
    items = code if kind is Kind.CODES else text.filter(bool)
    slots = draw(st.integers(1, 3)) if and_or else 1
    return [ql(*draw(st.lists(items, min_size=1, max_size=1 if single else 3))) for _ in range(slots)]


@st.composite
def find_queries(draw):
    query_id = draw(st.sampled_from(sorted(FIND)))
    spec = SPECS[query_id]
    slots = []
    for name, p in sorted(spec.params.items()):
        if name == "$homeCommunityId":
            continue
        if p.required or draw(st.booleans()):
            slots += [Slot(name, (v,)) for v in _slot_values(p.kind, p.and_or, draw, p.single)]
    return parse_parameters(query_id, slots)


def _rendered(stmt, values, dialect) -> str:
    if values:
        stmt = stmt.params(values)
    return str(stmt.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))


def _shaped_step(query, limit):
    plan = plans.plan_for(query, limit)
    step = next(plan)
    plan.close()
    return step


@settings(max_examples=150)
@given(first=find_queries(), second=find_queries(), limit=st.sampled_from((None, 10, 1000)))
def test_a_shaped_select_is_the_select_built_from_the_values(first, second, limit):
    plans._shaped.clear()
    for query in (first, second, first):  # built, built or cached, cached
        step = _shaped_step(query, limit)
        direct = FIND[query.query_id](query)
        if limit is not None:
            direct = direct.limit(limit + 1)
        for dialect in DIALECTS:
            assert _rendered(step.statement, step.parameters, dialect) == _rendered(direct, None, dialect)


def test_same_shape_builds_once_and_new_values_are_bound(monkeypatch):
    built = []
    real = plans.find_documents_select
    monkeypatch.setitem(plans.PLANS, C.SQ_FIND_DOCUMENTS, lambda q_, limit: plans.find_documents(q_, limit))
    monkeypatch.setattr(plans, "find_documents_select", lambda q_: built.append(q_) or real(q_))
    plans._shaped.clear()

    def find(pid, *authors):
        slots = [Slot("$XDSDocumentEntryPatientId", (q(pid),)), Slot("$XDSDocumentEntryStatus", (ql(C.STATUS_APPROVED),))]
        slots += [Slot("$XDSDocumentEntryAuthorPerson", (ql(*authors),))] if authors else []
        return _shaped_step(parse_parameters(C.SQ_FIND_DOCUMENTS, slots), 100)

    a, b = find("P1^^^&1.2&ISO", "^Doe%"), find("P2^^^&1.2&ISO", "^O\\Neil%")
    c = find("P3^^^&1.2&ISO", "^x", "^y")
    assert len(built) == 2  # a and b share a shape; c has two author patterns
    assert a.statement is b.statement and c.statement is not a.statement
    assert {"P2^^^&1.2&ISO", C.STATUS_APPROVED, "^O\\\\Neil%"} <= set(b.parameters.values())  # the pattern LIKE-escaped
    assert "P1^^^&1.2&ISO" not in set(b.parameters.values())


def test_author_patterns_match_as_written_through_a_cached_select(engine):
    """Behaviour on both engines, the second query of a shape reusing the first's select: % and _
    are wildcards, a backslash is itself."""
    people = {1: "^O\\Neil^Ann", 2: "^OxNeil^Ann", 3: "^O%Neil^Ann"}
    with engine.begin() as c:
        c.execute(insert(document_entry), [
            dict(id=f"urn:uuid:00000000-0000-4000-8000-{i:012d}", lid=f"urn:uuid:00000000-0000-4000-8000-{i:012d}",
                 version=1, unique_id=f"1.2.3.{i}", patient_id="P1^^^&1.2.3&ISO", status=C.STATUS_APPROVED,
                 object_type=C.DOC_ENTRY_STABLE, xml=b"<rim:ExtrinsicObject/>")
            for i in people
        ])
        c.execute(insert(document_author), [
            dict(entry_id=f"urn:uuid:00000000-0000-4000-8000-{i:012d}", person=p) for i, p in people.items()
        ])
    store = RegistryStore(engine)
    plans._shaped.clear()

    def found(pattern):
        query = parse_parameters(C.SQ_FIND_DOCUMENTS, [
            Slot("$XDSDocumentEntryPatientId", (q("P1^^^&1.2.3&ISO"),)),
            Slot("$XDSDocumentEntryStatus", (ql(C.STATUS_APPROVED),)),
            Slot("$XDSDocumentEntryAuthorPerson", (ql(pattern),)),
        ])
        return sorted(r.unique_id for r in store.stored_query(query, limit=100))

    assert found("^O_Neil%") == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert found("^O\\Neil%") == ["1.2.3.1"]
    assert found("^O%Neil^Ann") == ["1.2.3.1", "1.2.3.2", "1.2.3.3"]
    assert found("^o\\neil%") == ["1.2.3.1"]  # case-insensitive
    assert len(plans._shaped) == 1
