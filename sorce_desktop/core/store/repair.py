"""Salvaging a damaged catalog: every row that can still be read goes into a new catalog.

SQLite reports a damaged page only when a query touches it, so rows are read by ranges of their
rowid; a range that fails is halved until the unreadable rows are pinned down, and everything
around them is kept. The new catalog then gets the store's schema and indexes afresh (index pages
are never read from the damaged file). What was lost is left for ``index`` to redo:

- a photo row that could not be read: its file is found again and indexed as new;
- a region row that could not be read: the photos whose regions border the unreadable range (and any
  indexed photo left with no visual region) are set back to pending, and re-embedded;
- a text line that could not be read: its photo's text is read again (its ``ocr_done`` mark goes).

The damaged file is renamed beside the new one (``catalog.sqlite3.damaged-<time>``), never deleted.
The vector index needs nothing: it is synced with the catalog when the store opens.

What the catalog knew besides its rows is kept too: a folder list that was lost is rebuilt from the
folders the salvaged photo rows name, and a lost model binding from the vector file's checksum file
(which names the model's fingerprint), the salvaged vectors (their size, their region names: the layout)
and the settings. Lost rows are counted as rows: an unreadable range of rowids counts only up to the
highest rowid the table is known to have reached.

What is read and written is the store's business (:mod:`sorce_desktop.core.store.salvage` holds the
statements); this module decides what is copied, where the damage is, and what ``index`` must redo.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from sorce_desktop.core.store import salvage
from sorce_desktop.core.store.catalog import (
    CATALOG_NAME,
    LOCK_NAME,
    VECTORS_META,
    ModelBinding,
    StoreError,
    WriterLock,
    is_damage,
)
from sorce_desktop.core.store.vectorfile import fsync_dir

#: rows asked for per query while nothing fails (a region row holds its vector: ~3 KB at 768-d)
CHUNK = 4096
#: failing single-row probes after which a table is given up (its interior pages are gone)
MAX_PROBES = 2_000_000


@dataclass
class RepairReport:
    catalog: Path
    damaged: bool  # False: the catalog passed SQLite's integrity check and was left as it is
    kept_as: Path | None = None  # where the damaged file now is
    rows: dict[str, int] = field(default_factory=dict)  # rows salvaged per table
    lost: dict[str, int] = field(default_factory=dict)  # rows that could not be read per table
    redo: int = 0  # photos set back to pending: index re-embeds them
    problem: str = ""  # SQLite's first complaint about the damaged file
    #: folders put back in the folder list from the salvaged photo rows (its own rows were lost)
    folders_recovered: list[str] = field(default_factory=list)
    #: the model binding, when its row was lost and it was rebuilt (else None)
    binding_restored: ModelBinding | None = None
    #: what it was rebuilt from, in words
    binding_source: str = ""
    #: tables with rows that could not be read and no known count of them (their pages all failed)
    unreadable: list[str] = field(default_factory=list)

    @property
    def salvaged_nothing(self) -> bool:
        """No photo, region or folder row could be read: the new catalog is empty."""
        return self.damaged and not any(self.rows.get(t, 0) for t in ("folders", "photos", "regions"))


#: the end of a lost range whose end is unknown (counted only up to the table's highest known rowid)
UNKNOWN_TOP = 1 << 62


def _spine_unreadable(src: sqlite3.Connection, table: str, cols: list[str]) -> bool:
    """Whether no row of ``table`` can be reached: a lookup of a rowid that does not exist touches only
    the pages above the leaves, so when lookups spread over 40 bits all fail, the table's root (or the
    pages under it) is gone, and walking its rowids one by one would find nothing."""
    for k in range(0, 41, 4):
        try:
            salvage.rows_between(src, table, cols, 1 << k, 1 << k)
            return False
        except sqlite3.DatabaseError as exc:
            if not is_damage(exc):
                raise
    return True


def _salvage(
    src: sqlite3.Connection, table: str, cols: list[str], emit: Callable[[list[tuple]], None]
) -> tuple[int, list[tuple[int, int]]]:
    """Copy every readable row of ``table`` through ``emit`` (rows are ``(rowid, *cols)``). Returns
    (rows read, unreadable rowid ranges)."""
    top = salvage.max_rowid(src, table)
    if top is None and _spine_unreadable(src, table, cols):
        return 0, [(1, UNKNOWN_TOP)]  # no row can be reached: counted from what else knows its ids
    open_ended = top is None  # the last page is unreadable: walk on until rows stop coming
    if open_ended:
        # as far as SQLite's sequence says ids went (regions), and on while rows keep coming
        top = max(CHUNK * 64, salvage.sequence_value(src, table))
    n = 0
    lost: list[tuple[int, int]] = []
    probes = 0
    lo = 1 if top >= 0 else top
    last_seen = 0
    while lo <= top:
        stack = [(lo, min(lo + CHUNK - 1, top))]
        while stack:
            a, b = stack.pop()
            try:
                rows = salvage.rows_between(src, table, cols, a, b)
            except sqlite3.DatabaseError as exc:
                if not is_damage(exc):
                    raise
                if a == b:
                    probes += 1
                    if lost and lost[-1][1] == a - 1:
                        lost[-1] = (lost[-1][0], a)
                    else:
                        lost.append((a, a))
                    if probes > MAX_PROBES:
                        lost.append((a + 1, top))
                        return n, lost
                else:
                    mid = (a + b) // 2
                    stack.append((mid + 1, b))
                    stack.append((a, mid))
                continue
            if rows:
                emit(rows)
                n += len(rows)
                last_seen = max(last_seen, rows[-1][0])
        lo += CHUNK
        # walk on while rows keep coming (a table whose pages all fail is not walked to MAX_PROBES)
        if open_ended and lo > top and last_seen > top - CHUNK * 16:
            top += CHUNK * 64
    return n, lost


def repair_catalog(
    folder: str | os.PathLike,
    progress: Callable[[str], None] | None = None,
    *,
    layout: str | None = None,
) -> RepairReport:
    """Salvage the catalog in ``folder`` (an index folder) into a new one; see the module doc.
    ``layout``: the settings' (a lost binding's layout when the salvaged regions do not tell it).
    Takes the writer lock, so no other sorce-desktop process writes meanwhile."""
    folder = Path(folder)
    path = folder / CATALOG_NAME
    if not path.exists():
        raise StoreError(f"There is no catalog in {folder} to repair.")
    lock = WriterLock(folder / LOCK_NAME)
    lock.acquire()
    try:
        problem = salvage.integrity_problem(path)
        report = RepairReport(path, bool(problem), problem=problem)
        if not problem:
            return report
        return _rebuild(folder, path, report, progress or (lambda _m: None), layout)
    finally:
        lock.release()


def _rebuild(
    folder: Path,
    path: Path,
    report: RepairReport,
    say: Callable[[str], None],
    layout: str | None = None,
) -> RepairReport:
    new_path = folder / (CATALOG_NAME + ".repairing")
    for p in (new_path, Path(str(new_path) + "-journal")):
        p.unlink(missing_ok=True)
    dst = None
    try:
        dst, fts = salvage.create_salvage(new_path)
        lost_regions = _copy_readable(path, dst, report, say)
        report.folders_recovered = salvage.restore_folders(dst)
        _restore_binding(folder, dst, report, layout)
        report.redo = salvage.settle_salvage(dst, lost_regions, fts)
        salvage.finish_salvage(dst)
    except BaseException:
        if dst is not None:
            dst.close()
        new_path.unlink(missing_ok=True)
        raise
    dst.close()
    with open(new_path, "rb+") as f:
        os.fsync(f.fileno())
    report.kept_as = _swap_in(folder, path, new_path)
    return report


def _copy_readable(
    path: Path, dst: sqlite3.Connection, report: RepairReport, say: Callable[[str], None]
) -> list[tuple[int, int]]:
    """Copy every readable row of the damaged catalog into ``dst``, counting per table what was kept
    and lost. Returns the region ids that could not be read."""
    src = salvage.open_damaged(path)
    if src is None:
        return []
    lost_regions: list[tuple[int, int]] = []
    lost_ranges: dict[str, list[tuple[int, int]]] = {}
    try:
        src_tables = salvage.table_names(src)
        for table in salvage.SALVAGED_TABLES:
            if table not in src_tables:
                continue
            cols = [c for c in salvage.table_columns(dst, table) if c in set(salvage.table_columns(src, table))]

            def emit(rows: list[tuple], table: str = table, cols: list[str] = cols) -> None:
                salvage.insert_salvaged(dst, table, cols, (r[1:] for r in rows))

            say(f"reading {table}...")
            n, lost = _salvage(src, table, cols, emit)
            report.rows[table] = n
            lost_ranges[table] = lost
            if table == "regions":
                lost_regions = lost
        bounds = salvage.highest_known_rowids(dst, src)
    finally:
        src.close()
    for table, lost in lost_ranges.items():
        top = bounds.get(table, 0)
        report.lost[table] = sum(max(0, min(b, top) - a + 1) for a, b in lost)
        if lost and not report.lost[table]:
            report.unreadable.append(table)
    return lost_regions


_CELL = re.compile(r"^([a-z]+\d+)_r\d+c\d+$")


def _region_kinds(names: set[str]) -> set[str]:
    """Region names without their cell (``g3_r0c1`` -> ``g3``): what a layout's names share."""
    return {m.group(1) if (m := _CELL.match(n)) else n for n in names}


def _layout_of(names: set[str], prefer: str | None) -> str | None:
    """The region layout whose regions carry these names (the settings' one when it fits), or None."""
    from sorce_desktop.core.regions import LAYOUTS, PROMPT_LAYOUTS

    seen = _region_kinds(names)
    fits = []
    for name, lay in {**LAYOUTS, **PROMPT_LAYOUTS}.items():
        kinds: set[str] = set()
        for w, h in ((640, 480), (480, 640), (1000, 1000), (4000, 1000), (1000, 4000)):
            kinds |= _region_kinds({r.name for r in lay.regions(w, h)})
        if seen <= kinds:
            fits.append((len(kinds), name))
    if not fits:
        return None
    if prefer in {n for _k, n in fits}:
        return prefer
    return min(fits)[1]


def _restore_binding(folder: Path, dst: sqlite3.Connection, report: RepairReport, layout: str | None) -> None:
    """Rebuild a lost model binding: the fingerprint from the vector file's checksum file (the model id
    is its part before '@'), the vector size from the salvaged vectors or the vector file, the layout
    from the salvaged region names, else the settings'. Without a fingerprint nothing is bound: the next
    index binds the model it loads (the settings' model), as for a new library."""
    binding, dim, names = salvage.salvaged_binding(dst)
    if binding is not None:
        return
    try:
        saved = json.loads((folder / VECTORS_META).read_text())
        saved = saved if isinstance(saved, dict) else {}
    except (OSError, ValueError):
        saved = {}
    fingerprint = str(saved.get("fingerprint") or "")
    model_id = str(saved.get("model_id") or fingerprint.rsplit("@", 1)[0])
    if not dim:
        dim = int(saved.get("dim") or 0) if str(saved.get("dim", "")).isdigit() else 0
    dim = dim or _vector_file_dim(folder)
    lay = _layout_of(names, layout) if names else str(saved.get("layout") or layout or "")
    if not fingerprint or not dim or not lay:
        return  # not enough is known: the next index binds the model it loads, as for a new library
    binding = ModelBinding(model_id, fingerprint, lay, dim)
    salvage.bind_salvage(dst, binding)
    report.binding_restored = binding
    report.binding_source = "the vector file's checksum file" + (" and the salvaged vectors" if names else "")


def _vector_file_dim(folder: Path) -> int:
    from sorce_desktop.core.store.catalog import VECTORS_NAME

    try:
        import faiss

        return int(faiss.read_index(str(folder / VECTORS_NAME)).d)
    except Exception:  # no vector file, or a damaged one: the size stays unknown
        return 0


def _swap_in(folder: Path, path: Path, new_path: Path) -> Path:
    """Put the salvaged catalog in place; the damaged file (and its write-ahead log, under the
    matching name) stays beside it. Returns where the damaged file now is."""
    kept = folder / f"{CATALOG_NAME}.damaged-{time.strftime('%Y%m%d-%H%M%S')}"
    os.replace(path, kept)
    for suffix in ("-wal", "-shm"):
        side = Path(str(path) + suffix)
        if side.exists():
            os.replace(side, Path(str(kept) + suffix))
    os.replace(new_path, path)
    fsync_dir(folder)
    return kept


def repair_summary(report: RepairReport) -> str:
    """What a repair of a damaged catalog did, for people."""
    from sorce_desktop.core.words import count, photos

    kept = f"The damaged file is kept as {report.kept_as}."
    binding = ""
    if report.binding_restored is not None:
        b = report.binding_restored
        binding = (
            f" Its model binding was lost and is kept from {report.binding_source}: {b.model_id} "
            f"({b.layout} layout)."
        )
    if report.salvaged_nothing:
        return (
            f"The catalog {report.catalog} was damaged ({report.problem}) and nothing could be salvaged from "
            f"it: no photo, region or folder could be read. A new, empty catalog is in its place.{binding} "
            f"{kept} Index your folders again: sorce-desktop index FOLDER ..."
        )
    lost = [f"{count(n, 'row')} of {t}" for t, n in report.lost.items() if n]
    lost += [
        f"the {t} table (how many rows it held is not known)"
        for t in report.unreadable
        if not (t == "folders" and report.folders_recovered)
    ]
    lost_text = "; " + ", ".join(lost) + " could not be read" if lost else ""
    folders = ""
    if report.folders_recovered:
        names = ", ".join(report.folders_recovered)
        n = count(len(report.folders_recovered), "folder")
        folders = f" The folder list was lost; {n} recovered from the photos' rows: {names}."
    return (
        f"The catalog {report.catalog} was damaged ({report.problem}). Salvaged "
        f"{photos(report.rows.get('photos', 0))} and {count(report.rows.get('regions', 0), 'region')} into "
        f"a new catalog{lost_text}; "
        f"{photos(report.redo)} will be embedded again.{folders}{binding} {kept} "
        "Run sorce-desktop index to redo what was lost."
    )
