"""XDS DTM values (ITI TF-3 §4.2.3.1.5): parse, normalise for storage and range comparison.

A DTM is ``YYYY[MM[DD[hh[mm[ss]]]]]`` in UTC, of 4, 6, 8, 10, 12 or 14 digits.

Normalisation (`dtm_key`): a partial value is padded on the right to the *earliest instant* it
denotes — missing month and day become ``01``, missing hour, minute and second become ``00``
(``"2005"`` → ``"20050101000000"``, ``"200412230800"`` → ``"20041223080000"``). Keys are 14
digits, so they compare as strings in time order.

Stored-query ranges (ITI TF-2a §3.18.4.1.2.3.7): ``…From`` is inclusive and ``…To`` exclusive, so
a stored value ``v`` matches when ``dtm_key(from) <= dtm_key(v) < dtm_key(to)``; both bounds are
padded the same way as stored values (``$XDSDocumentEntryCreationTimeTo = 2005`` keeps values
before 2005-01-01T00:00:00).
"""

from __future__ import annotations

import calendar
import datetime as _dt

DTM_LENGTHS = (4, 6, 8, 10, 12, 14)
_PAD = "0101000000"  # MMDDhhmmss of the earliest instant


def dtm_problem(value: str) -> str | None:
    """None when `value` is a valid DTM, else the reason (ITI TF-3 §4.2.3.1.5)."""
    if not isinstance(value, str) or not value.isascii() or not value.isdigit():
        return "DTM must contain only the digits of YYYY[MM[DD[hh[mm[ss]]]]] (UTC, no time zone)"
    if len(value) not in DTM_LENGTHS:
        return f"DTM must have 4, 6, 8, 10, 12 or 14 digits, not {len(value)}"
    year = int(value[0:4])
    if year == 0:
        return "year 0000 out of range"
    if len(value) >= 6:
        month = int(value[4:6])
        if not 1 <= month <= 12:
            return f"month {value[4:6]} out of range"
        if len(value) >= 8:
            day = int(value[6:8])
            if not 1 <= day <= calendar.monthrange(year, month)[1]:
                return f"day {value[6:8]} out of range for {value[0:6]}"
    for start, limit, what in ((8, 23, "hour"), (10, 59, "minute"), (12, 59, "second")):
        if len(value) > start and int(value[start : start + 2]) > limit:
            return f"{what} {value[start:start + 2]} out of range"
    return None


def dtm_key(value: str) -> str:
    """The 14-digit key of a DTM (earliest instant it denotes). Raises ValueError if invalid."""
    problem = dtm_problem(value)
    if problem:
        raise ValueError(f"invalid DTM {value!r}: {problem}")
    return value + _PAD[len(value) - 4 :]


def dtm_to_datetime(value: str) -> _dt.datetime:
    """The aware UTC datetime of a DTM's earliest instant."""
    key = dtm_key(value)
    return _dt.datetime.strptime(key, "%Y%m%d%H%M%S").replace(tzinfo=_dt.timezone.utc)


def now_dtm(now: _dt.datetime | None = None) -> str:
    """The current time (or `now`) as a 14-digit UTC DTM, e.g. for Folder.lastUpdateTime."""
    moment = now if now is not None else _dt.datetime.now(_dt.timezone.utc)
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc)
    return moment.strftime("%Y%m%d%H%M%S")
