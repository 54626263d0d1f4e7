"""ITI-44 Patient Identity Feed HL7 V3, PIX Manager or Document Registry audit (ITI TF-2b §3.44.5.1.2).

Source = the Patient Identity Source (wsa:ReplyTo, its address), Destination = us (endpoint URL,
process id); Patient with detail type `II`, value the message id. Actions and merges: see
`atna.events._feed`.
"""

from __future__ import annotations

from datetime import datetime

from atna.dicom import AuditEvent
from atna.events._feed import feed_events
from atna.events.common import AuditNode
from registry.ports import AuditRecord

TRANSACTION = "ITI-44"


def receiver(record: AuditRecord, node: AuditNode, *, now: datetime) -> tuple[AuditEvent, ...]:
    return feed_events(record, node, now, transaction=TRANSACTION, detail_type="II")
