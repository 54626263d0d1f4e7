"""The pending-blob journal (repository.pending): rows recorded durably before blobs are committed,
settled lazily (deleted along with a later record), and a crash that loses the settle queue leaves
rows the sweep settles by asking the registry."""

from __future__ import annotations

from sqlalchemy import event, func, select

from registry.schema import repository_pending
from repository import pending as P
from repository.blobs import object_key
from repository.blobs.memory import MemoryBlobStore
from repository.intake import META_INTAKE_ID
from repository.sweep import sweep_orphans

REPO = "1.2.3"


def _rows(engine) -> int:
    with engine.connect() as c:
        return c.execute(select(func.count()).select_from(repository_pending)).scalar_one()


def _record(journal, intake: str, uid: str) -> None:
    journal.record(intake, [(object_key(REPO, uid), REPO, uid)])


def _transactions(engine) -> list[int]:
    commits: list[int] = []
    event.listen(engine, "commit", lambda conn: commits.append(1))
    return commits


def test_settled_rows_go_with_a_later_record_in_the_same_transaction(engine):
    P.create_schema(engine)
    journal = P.PendingJournal(engine, piggyback=4)
    for i in range(4):
        _record(journal, f"i{i}", f"d{i}")
        journal.settle(f"i{i}")
    assert _rows(engine) == 4  # settled, not yet deleted
    commits = _transactions(engine)
    _record(journal, "i4", "d4")
    assert len(commits) == 1 and _rows(engine) == 1  # one transaction: the new row in, 4 settled out
    assert [p.intake_id for p in journal.all()] == ["i4"]


def test_a_full_settle_queue_flushes_by_itself(engine):
    P.create_schema(engine)
    journal = P.PendingJournal(engine, settle_batch=3)
    for i in range(3):
        _record(journal, f"i{i}", f"d{i}")
    journal.settle("i0")
    journal.settle("i1")
    assert _rows(engine) == 3
    journal.settle("i2")
    assert _rows(engine) == 0


def test_older_than_never_reports_a_settled_submission(engine):
    P.create_schema(engine)
    journal = P.PendingJournal(engine)
    _record(journal, "a", "d1")
    _record(journal, "b", "d2")
    journal.settle("a")
    assert [p.intake_id for p in journal.older_than(-1)] == ["b"]
    assert _rows(engine) == 1


def test_a_crash_losing_the_settle_queue_is_settled_by_the_sweep(engine):
    P.create_schema(engine)
    blobs = MemoryBlobStore()
    for intake, uid in (("a", "registered"), ("b", "never-registered")):
        w = blobs.open_staged(object_key(REPO, uid), {META_INTAKE_ID: intake})
        w.write(b"x")
        w.commit()
    journal = P.PendingJournal(engine)
    _record(journal, "a", "registered")
    _record(journal, "b", "never-registered")
    journal.settle("a")
    restarted = P.PendingJournal(engine)  # the process died: its queue is gone, the rows stay
    assert _rows(engine) == 2
    report = sweep_orphans(blobs, lambda uids: {u for u in uids if u == "registered"}, 0, pending=restarted)
    assert report.orphans_deleted == (object_key(REPO, "never-registered"),) and report.settled == 1
    assert blobs.exists(object_key(REPO, "registered")) and _rows(engine) == 0


def test_a_failed_record_keeps_the_settle_queue(engine):
    P.create_schema(engine)
    journal = P.PendingJournal(engine, piggyback=1)
    _record(journal, "a", "d1")
    journal.settle("a")
    try:
        _record(journal, "a", "d1")  # the same primary key: the transaction fails
    except P.PendingJournalError:
        pass
    else:
        raise AssertionError("a duplicate row must fail")
    journal.flush()
    assert _rows(engine) == 0
