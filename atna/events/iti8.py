"""ITI-8 Patient Identity Feed, PIX Manager or Document Registry audit (ITI TF-2a §3.8.5.1.2, §3.8.5.2.2).

Source = the Patient Identity Source (UserID: its sending facility|application, MSH-4|MSH-3; its
address), Destination = us (receiving facility|application, process id); one Patient per event with
detail MSH-10. Actions and merges: see `atna.events._feed`.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events._feed import feed_events
from atna.events.common import AuditNode
from registry.ports import AuditRecord

TRANSACTION = "ITI-8"


def receiver(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return feed_events(record, node, now, transaction=TRANSACTION, detail_type="MSH-10")
