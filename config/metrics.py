"""`GET /metrics`: the node's state in the Prometheus text exposition format (version 0.0.4).

What an operator watches (issue 5: "the spool is bounded and its state is visible in metrics"):
the audit spool (`carnet_audit_spool_*`: depth, bytes, bounds, oldest event's age, events
appended / refused, delivered and failed per destination), the built-in Audit Record
Repository's syslog receivers (`carnet_arr_*`), and the MLLP listener (`carnet_mllp_*`).
Sources are plain functions returning dicts (numbers, or dicts of numbers by label), read on
the worker pool (the spool's are database reads).
"""

from __future__ import annotations

import logging
import re
from typing import Any, Callable, Mapping

from twisted.internet.threads import deferToThreadPool
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

log = logging.getLogger("carnet")

_NAME = re.compile(r"[^a-zA-Z0-9_]")
_LABELS = {"delivered": "destination", "failed_attempts": "destination", "failed_events": "destination",
           "destinations": "destination"}


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    return None


def _escape(label: str) -> str:
    return label.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def exposition(sources: Mapping[str, Mapping[str, Any]]) -> bytes:
    """Prometheus text for `{prefix: {metric: number | {label value: number}}}`."""
    lines: list[str] = []
    for prefix, values in sources.items():
        for key in sorted(values):
            name = _NAME.sub("_", f"carnet_{prefix}_{key}")
            value = values[key]
            if isinstance(value, Mapping):
                label = _LABELS.get(key, "name")
                samples = [(k, _number(v)) for k, v in sorted(value.items())]
                samples = [(k, v) for k, v in samples if v is not None]
                if not samples:
                    continue
                lines.append(f"# TYPE {name} gauge")
                lines += [f'{name}{{{label}="{_escape(str(k))}"}} {v:g}' for k, v in samples]
            elif (v := _number(value)) is not None:
                lines.append(f"# TYPE {name} gauge")
                lines.append(f"{name} {v:g}")
    return ("\n".join(lines) + "\n").encode("utf-8")


class MetricsResource(Resource):
    isLeaf = True

    def __init__(self, sources: Mapping[str, Callable[[], Mapping[str, Any]]], *, reactor: Any, threadpool: Any):
        super().__init__()
        self.sources = dict(sources)
        self.reactor = reactor
        self.threadpool = threadpool

    def _collect(self) -> bytes:
        read: dict[str, Mapping[str, Any]] = {}
        for prefix, source in self.sources.items():
            try:
                read[prefix] = source()
            except Exception:  # noqa: BLE001 - one broken source must not hide the others
                log.exception("metrics source %s failed", prefix)
                read[prefix] = {"up": 0}
        return exposition(read)

    def render_GET(self, request):  # noqa: N802 - Twisted's name
        d = deferToThreadPool(self.reactor, self.threadpool, self._collect)

        def done(body: bytes) -> None:
            request.setHeader(b"Content-Type", b"text/plain; version=0.0.4; charset=utf-8")
            request.write(body)
            request.finish()

        def failed(f) -> None:
            log.error("metrics failed: %s", f.getErrorMessage())
            request.setResponseCode(500)
            request.finish()

        d.addCallbacks(done, failed)
        return NOT_DONE_YET
