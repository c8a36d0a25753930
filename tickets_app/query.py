"""The search box's query language, parsed into filters and free text, and written back (pure).

    status:open,waiting priority:urgent tag:billing assignee:none created>2026-01-01
    sort:-updated "exact phrase" words

Unknown keys and malformed values are plain words, so nothing typed can make a query fail; free text
becomes a list of terms (words and phrases, all required) that each search index quotes or binds itself
(tickets_app/search.py), so user input is never syntax. `format_query` writes a parsed query back as text
that parses to the same query: the desk's search box shows what its filter bar chose, and the other way round.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Literal, get_args

LIST_KEYS = {
    "status": "status",
    "priority": "priority",
    "category": "category",
    "tag": "tag",
    "tags": "tag",
    "assignee": "assignee",
    "requester": "requester",
    "customer": "requester",
    "tier": "tier",
}
RANGE_KEYS = ("created", "updated")
Sort = Literal["relevance", "due", "-due", "created", "-created", "updated", "-updated", "priority", "-priority"]
SORTS: tuple[str, ...] = get_args(Sort)
# Queues of staff work. Each is a set of tickets, narrowed further by the query; `open` is unresolved work.
View = Literal["open", "mine", "unassigned", "at_risk", "breached", "all"]
VIEWS: tuple[str, ...] = get_args(View)

_TOKEN = re.compile(r'(?P<key>[A-Za-z]+)(?P<op>:|>=|<=|>|<)(?P<value>"[^"]*"?|\S+)|"(?P<phrase>[^"]*)"?|(?P<word>\S+)')
_HAS_TOKEN_CHAR = re.compile(r"\w", re.UNICODE)
# A run of letters and digits: what both indexes cut text into (FTS5's unicode61 and PostgreSQL's parser
# split at anything else, the underscore included).
_WORD = re.compile(r"[^\W_]+")


@dataclass
class ParsedQuery:
    terms: list[str] = field(default_factory=list)
    filters: dict[str, list[str]] = field(default_factory=dict)
    ranges: dict[str, tuple[datetime | None, datetime | None]] = field(default_factory=dict)
    sort: str | None = None


def parse_query(text: str) -> ParsedQuery:
    """Parse user input; never raises."""
    parsed = ParsedQuery()
    # NUL ends a string inside FTS5 (an "unterminated string" error) and PostgreSQL refuses it; it is no word.
    for match in _TOKEN.finditer(text[:1000].replace("\x00", " ")):
        key, op, value = match.group("key"), match.group("op"), match.group("value")
        if key is not None and value is not None and _apply_key(parsed, key.lower(), op, value.strip('"')):
            continue
        raw = match.group("phrase") if match.group("phrase") is not None else match.group(0)
        term = raw.strip()
        if term and _HAS_TOKEN_CHAR.search(term):
            parsed.terms.append(term)
    return parsed


def is_phrase(term: str) -> bool:
    """Whether a term is searched as a phrase: several words side by side (`"daily quota"`, or `e-mail`,
    which both indexes split in two), which neither index counts cheaply."""
    return len(_WORD.findall(term)) > 1


def _apply_key(parsed: ParsedQuery, key: str, op: str, value: str) -> bool:
    values = [v for v in value.split(",") if v]
    if key in LIST_KEYS and op == ":" and values:
        parsed.filters.setdefault(LIST_KEYS[key], []).extend(values)
        return True
    if key == "sort" and op == ":" and value in SORTS:
        parsed.sort = value
        return True
    if key in RANGE_KEYS and op in (">", ">=", "<", "<=", ":"):
        instant = _parse_instant(value)
        if instant is None:
            return False
        low, high = parsed.ranges.get(key, (None, None))
        if op in (">", ">="):
            low = instant
        elif op in ("<", "<="):
            high = instant
        else:
            low, high = instant, instant.replace(hour=23, minute=59, second=59)
        parsed.ranges[key] = (low, high)
        return True
    return False


def format_query(parsed: ParsedQuery) -> str:
    """Text that `parse_query` reads back as `parsed`: filters, ranges and sort first, then the terms,
    each quoted when it would otherwise read as a key or split in two."""
    parts = [f"{key}:{_format_values(values)}" for key, values in parsed.filters.items() if values]
    for key, (low, high) in parsed.ranges.items():
        if low is not None:
            parts.append(f"{key}>={_format_instant(low)}")
        if high is not None:
            parts.append(f"{key}<={_format_instant(high)}")
    if parsed.sort:
        parts.append(f"sort:{parsed.sort}")
    parts += [term if parse_query(term).terms == [term] else f'"{term}"' for term in parsed.terms]
    return " ".join(parts)


def _format_values(values: list[str]) -> str:
    joined = ",".join(values)
    return f'"{joined}"' if re.search(r"\s", joined) else joined


def _format_instant(instant: datetime) -> str:
    if instant.time() == datetime.min.time():
        return instant.date().isoformat()
    return instant.isoformat().replace("+00:00", "Z")


def _parse_instant(value: str) -> datetime | None:
    """The instant in UTC, or None (a plain word) for no date, or for one that is no instant in UTC: the
    first or last day a datetime holds, in another zone (0001-01-01T00:00:00+01:00 was a 500)."""
    try:
        if len(value) == 10:
            day = date.fromisoformat(value)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        instant = datetime.fromisoformat(value.replace("Z", "+00:00"))
        return instant.astimezone(UTC) if instant.tzinfo else instant.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None
