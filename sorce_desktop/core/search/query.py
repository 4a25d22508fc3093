"""A search as people type it: what to match, and when, where, in which folder, and what not.

``beach 2023``, ``july 2023``, ``after:2023``, ``after:2023-07``, ``before:2024-01-15``: a period (after: from
the start of that year, month or day on; before: until its start; a year, a month and a year, a day
("25 dec 2022", "2022-12-25") or years ("2019-2021") written plainly: within it, "in 2023" and "since 2020"
as said). ``lisbon``, ``in lisbon``, ``place:lisbon``: photos taken there (a place word counts
only when some photo of the library was taken there; ``place:`` names any place). ``in:NAME``: photos in a
watched folder or a subfolder of that name. ``-word``, ``-"two words"``: not this. The rest is what the
picture regions, the words read in photos and the file names are matched against.

:func:`parse` only reads the text; what a place or a folder name means in this library is looked up by the
search (core/search/answer.py), which says in one line what it did not understand. No Qt, no store.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field

from sorce_desktop.core.textstore import fold

MONTHS = {
    name: i + 1
    for i, names in enumerate(
        [
            ("january", "jan"),
            ("february", "feb"),
            ("march", "mar"),
            ("april", "apr"),
            ("may",),
            ("june", "jun"),
            ("july", "jul"),
            ("august", "aug"),
            ("september", "sep", "sept"),
            ("october", "oct"),
            ("november", "nov"),
            ("december", "dec"),
        ]
    )
    for name in names
}
MONTH_NAMES = ["", "January", "February", "March", "April", "May", "June", "July", "August", "September",
               "October", "November", "December"]  # fmt: skip

#: years written plainly in a query count as a period from here to next year (a 4-digit number outside
#: is a word: "route 66", "3000 km")
FIRST_YEAR = 1900

_TOKEN = re.compile(r'-?[^\s"“]*["“][^"”]*["”]?|\S+')
_DATE = re.compile(r"^(\d{4})(?:-(\d{1,2})(?:-(\d{1,2}))?)?$")
#: words that join a place to the rest ("in lisbon", "at the beach in nice", "photos from lisbon")
PLACE_LEADS = ("in", "at", "from")
#: words that join a period written plainly to the rest ("in 2023", "from july 2023", "on 2022-12-25");
#: "since" makes it open-ended ("since 2020": from its start on)
PERIOD_LEADS = ("in", "from", "during", "on", "of", "since")
_DAY = re.compile(r"^(\d{1,2})(?:st|nd|rd|th)?$")
_RANGE = re.compile(r"^(\d{4})[-–](\d{4})$")


class QueryProblem(ValueError):
    """A part of a query that cannot be understood, with the reason in words."""


@dataclass(frozen=True)
class Period:
    """Taken at or after ``start`` and before ``end`` (local wall-clock ISO strings; None: open)."""

    start: str | None
    end: str | None
    label: str

    def contains(self, taken: str) -> bool:
        return (self.start is None or taken >= self.start) and (self.end is None or taken < self.end)

    def __and__(self, other: Period) -> Period:
        starts = [s for s in (self.start, other.start) if s is not None]
        ends = [e for e in (self.end, other.end) if e is not None]
        return Period(max(starts) if starts else None, min(ends) if ends else None, f"{self.label}, {other.label}")


@dataclass
class QueryPart:
    """One understood part of a query, as shown back to the user (a chip) and removable from it.

    ``kind``: 'words' | 'period' | 'place' | 'folder' | 'not'; ``label``: what it says ("after 2023",
    "not: string"); ``tokens``: the parts of the typed text it came from (removed to drop it)."""

    kind: str
    label: str
    tokens: list[str] = field(default_factory=list)


@dataclass
class ParsedSearch:
    text: str  # what is matched (quoted phrases kept, for the required-words parse)
    period: Period | None = None
    #: explicit ``place:`` names and place words (folded); which places they are is the library's to say
    places: list[tuple[str, str]] = field(default_factory=list)  # (folded name, as typed)
    folders: list[str] = field(default_factory=list)  # ``in:`` names, as typed
    negatives: list[str] = field(default_factory=list)
    parts: list[QueryPart] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what was not understood, one sentence each

    @property
    def filtered(self) -> bool:
        return self.period is not None or bool(self.places) or bool(self.folders)


def period_start(value: str) -> tuple[str, str, str]:
    """'2023' | '2023-07' | '2023-07-14' -> (start of it, start of what follows it, how it is said)."""
    m = _DATE.match(value.strip())
    if not m:
        raise QueryProblem(f"'{value}' is not a date: write 2023, 2023-07 or 2023-07-14")
    y, mo, d = int(m.group(1)), m.group(2), m.group(3)
    try:
        if mo is None:
            start, nxt, label = dt.date(y, 1, 1), dt.date(y + 1, 1, 1), f"{y}"
        elif d is None:
            start = dt.date(y, int(mo), 1)
            nxt = dt.date(y + (start.month == 12), start.month % 12 + 1, 1)
            label = f"{MONTH_NAMES[start.month]} {y}"
        else:
            start = dt.date(y, int(mo), int(d))
            nxt = start + dt.timedelta(days=1)
            label = f"{start.day} {MONTH_NAMES[start.month][:3]} {y}"
    except ValueError:
        raise QueryProblem(f"'{value}' is not a date: write 2023, 2023-07 or 2023-07-14") from None
    return start.isoformat() + "T00:00:00", nxt.isoformat() + "T00:00:00", label


def after(value: str) -> Period:
    start, _, label = period_start(value)
    return Period(start, None, f"after {label}")


def before(value: str) -> Period:
    start, _, label = period_start(value)
    return Period(None, start, f"before {label}")


def within(value: str) -> Period:
    start, end, label = period_start(value)
    return Period(start, end, label)


def span_label(p: Period) -> str:
    """'1 Mar 2021 – 30 Jun 2023' for a period with both ends (its last day included)."""
    first = dt.date.fromisoformat(p.start[:10])
    last = dt.date.fromisoformat(p.end[:10]) - dt.timedelta(days=1)
    return " – ".join(f"{d.day} {MONTH_NAMES[d.month][:3]} {d.year}" for d in (first, last))


def _unquote(s: str) -> str:
    return " ".join(s.replace('"', " ").replace("“", " ").replace("”", " ").split())


def _year(token: str) -> int | None:
    if len(token) == 4 and token.isdigit() and FIRST_YEAR <= int(token) <= dt.date.today().year + 1:
        return int(token)
    return None


def _bare(token: str) -> str:
    return token.lower().strip(",.;")


def _plain_period(tokens: list[str], i: int) -> tuple[int, Period] | None:
    """A period written plainly from token ``i`` on, and how many tokens it takes: "2023", "july 2023",
    "25 dec 2022", "dec 25, 2022", "2023-07", "2022-12-25", "2019-2021". A date that does not exist
    ("2023-13", "31 feb 2023") is no period: its tokens stay words."""
    at = [_bare(t) for t in tokens[i : i + 3]]
    try:
        if len(at) == 3 and (d := _DAY.match(at[0])) and at[1] in MONTHS and _year(at[2]):  # 25 dec 2022
            return 3, within(f"{at[2]}-{MONTHS[at[1]]:02d}-{int(d.group(1)):02d}")
        if len(at) == 3 and at[0] in MONTHS and (d := _DAY.match(at[1])) and _year(at[2]):  # dec 25, 2022
            return 3, within(f"{at[2]}-{MONTHS[at[0]]:02d}-{int(d.group(1)):02d}")
        if len(at) >= 2 and at[0] in MONTHS and _year(at[1]):  # july 2023
            return 2, within(f"{at[1]}-{MONTHS[at[0]]:02d}")
        if _year(at[0]):  # 2023
            return 1, within(at[0])
        if (m := _RANGE.match(at[0])) and _year(m.group(1)) and _year(m.group(2)) and m.group(1) <= m.group(2):
            first, last = within(m.group(1)), within(m.group(2))  # 2019-2021: both years whole
            return 1, Period(first.start, last.end, f"{m.group(1)} – {m.group(2)}")
        if (m := _DATE.match(at[0])) and m.group(2) and _year(m.group(1)):  # 2023-07, 2022-12-25
            return 1, within(at[0])
    except QueryProblem:
        return None
    return None


def parse(text: str, place_names: set[str] | frozenset[str] = frozenset()) -> ParsedSearch:
    """Split a query into what to match and its filters. ``place_names``: folded names (city, region,
    country) of the places the library's photos were taken in: those words restrict by place."""
    tokens = _TOKEN.findall(text)
    out = ParsedSearch("")
    words: list[str] = []  # kept tokens
    periods: list[Period] = []
    restrict: list[Period] = []
    i = 0
    while i < len(tokens):
        tok = tokens[i]
        low = tok.lower()
        if low.startswith(("after:", "before:")):
            key, _, value = tok.partition(":")
            try:
                p = after(value) if key.lower() == "after" else before(value)
                restrict.append(p)
                out.parts.append(QueryPart("period", p.label, [tok]))
            except QueryProblem as exc:
                out.problems.append(f"{tok}: {exc}")
        elif low.startswith("place:"):
            name = _unquote(tok.partition(":")[2])
            if fold(name):
                out.places.append((fold(name), name))
                out.parts.append(QueryPart("place", f"in {name}", [tok]))
            else:
                out.problems.append(f"{tok}: give a place name after place:")
        elif low.startswith("in:"):
            name = _unquote(tok.partition(":")[2])
            if name:
                out.folders.append(name)
                out.parts.append(QueryPart("folder", f"in {name}", [tok]))
            else:
                out.problems.append(f"{tok}: give a folder name after in:")
        elif tok.startswith("-") and len(tok) > 1:
            neg = _unquote(tok[1:])
            if fold(neg):
                out.negatives.append(neg)
                out.parts.append(QueryPart("not", f"not: {neg}", [tok]))
        elif (found := _plain_period(tokens, i)) is not None:
            n, p = found
            taken = tokens[i : i + n]
            lead = words[-1] if words and words[-1].lower() in PERIOD_LEADS else None
            if lead is not None:
                words.pop()
                taken = [lead, *taken]
            if lead is not None and lead.lower() == "since":
                p = Period(p.start, None, f"since {p.label}")
                restrict.append(p)
            else:
                periods.append(p)
            out.parts.append(QueryPart("period", p.label, taken))
            i += n
            continue
        else:
            matched = _place_at(tokens, i, place_names)
            if matched:
                n, name = matched
                lead = words[-1] if words and words[-1].lower() in PLACE_LEADS else None
                taken = tokens[i : i + n]
                if lead is not None:
                    words.pop()
                    taken = [lead, *taken]
                out.places.append((fold(name), name))
                out.parts.append(QueryPart("place", f"in {name}", taken))
                i += n
                continue
            words.append(tok)
        i += 1
    if periods:  # plain periods together: from the first one's start to the last one's end
        span = Period(min(p.start for p in periods), max(p.end for p in periods), ", ".join(p.label for p in periods))
        restrict.append(span)
    for p in restrict:
        out.period = p if out.period is None else out.period & p
    out.text = " ".join(words)
    if fold(out.text):
        out.parts.insert(0, QueryPart("words", _unquote(out.text), list(words)))
    return out


def _place_at(tokens: list[str], i: int, names) -> tuple[int, str] | None:
    """The longest place name (up to 3 words) the library knows starting at token ``i``."""
    if not names:
        return None
    for n in (3, 2, 1):
        if i + n > len(tokens):
            continue
        span = tokens[i : i + n]
        if any(t.startswith("-") or '"' in t or ":" in t for t in span):
            continue
        name = " ".join(t.strip(",.;!?") for t in span)
        if fold(name) in names and len(fold(name)) >= 3:
            return n, name
    return None


def without(text: str, part: QueryPart) -> str:
    """The query with one part taken out (a chip removed): its tokens, once each, from the typed text."""
    tokens = _TOKEN.findall(text)
    n = len(part.tokens)
    # where they were typed together ("in 2023" of "cat in the hat in 2023"), that run goes
    for i in range(len(tokens) - n, -1, -1) if n else ():
        if tokens[i : i + n] == part.tokens:
            return " ".join(tokens[:i] + tokens[i + n :])
    for t in part.tokens:
        if t in tokens:
            tokens.remove(t)
    return " ".join(tokens)
