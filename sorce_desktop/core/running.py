"""Asking the window or ``watch`` already running for a library to answer a search.

A process that runs for a library (the window, ``watch``) has its models loaded; ``search`` on the
command line asks it over a local socket and answers in milliseconds instead of loading them itself.
The socket is the one the window's single-instance guard listens on (gui/instance.py, a QLocalServer
named by :func:`server_name`); ``watch`` listens on the same name with :class:`SearchListener`. Only
one of them can run for a library (the store's writer lock), so the name is never contested.

The protocol is one line each way: ``search {json request}`` and the JSON answer: ``{"hits": [...],
"exact": [...]}`` (the hits as ``search --json`` prints them, and their scores unrounded, so the
text output is the same too), ``{"error": message, "kind": "query" | "image"}``, or ``{"busy": why}``
when the process cannot answer yet (its picture model is still loading): the command then answers
itself.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
import os
import socket
import sys
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

SEARCH = b"search "
#: how long ``search`` waits for a running process: it answers at once, or is too busy to be worth it
ASK_TIMEOUT_S = 10.0


def server_name(index_dir: str | os.PathLike) -> str:
    """The socket's name for this user and library (short: some systems limit socket paths)."""
    try:
        user = getpass.getuser()
    except Exception:  # no user name (a container): the folder alone still tells libraries apart
        user = ""
    key = f"{user}\0{os.path.realpath(os.fspath(index_dir))}".encode("utf-8", "surrogateescape")
    return "sorce-desktop-" + hashlib.blake2b(key, digest_size=8).hexdigest()


def socket_address(name: str) -> str:
    """Where a QLocalServer named ``name`` listens: a named pipe on Windows, else a socket file in the
    temporary folder Qt uses ($TMPDIR, else /tmp)."""
    if sys.platform == "win32":
        return rf"\\.\pipe\{name}"
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", name)


def search_request(text, image, crop, top, folder, min_score) -> dict:
    return {
        "text": text,
        "image": os.path.abspath(image) if image is not None else None,
        "crop": crop.as_list() if crop is not None else None,
        "top": top,
        "folder": os.path.abspath(folder) if folder else None,
        "min_score": min_score,
    }


def _read_line(read: Callable[[int], bytes]) -> bytes:
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = read(65536)
        if not chunk:
            break
        buf += chunk
    return buf


def ask_search(name: str, request: dict, timeout: float = ASK_TIMEOUT_S) -> dict | None:
    """The answer of the process running for ``name``; None when none runs (or it did not answer)."""
    line = SEARCH + json.dumps(request).encode() + b"\n"
    try:
        if sys.platform == "win32":  # a named pipe opens like a file
            with open(socket_address(name), "r+b", buffering=0) as pipe:
                pipe.write(line)
                raw = _read_line(pipe.read)
        else:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
                sock.settimeout(timeout)
                sock.connect(socket_address(name))
                sock.sendall(line)
                raw = _read_line(sock.recv)
    except OSError:  # nobody listens (no socket, a socket left by a crash), or too slow to answer
        return None
    try:
        reply = json.loads(raw)
    except ValueError:
        return None
    return reply if isinstance(reply, dict) else None


def answer_request(service, request: dict) -> dict:
    """Answer one request with ``service`` (core.search.SearchService), as ``search`` would."""
    from sorce_desktop.core.photos.images import ImageError
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import QueryError

    try:
        crop = Box.from_list(request["crop"]) if request.get("crop") else None
        answer = service.answer(
            request.get("text"),
            image=request.get("image"),
            crop=crop,
            top=int(request.get("top", 20)),
            folder=request.get("folder"),
            min_score=request.get("min_score"),
        )
    except ImageError as exc:
        return {"error": str(exc), "kind": "image"}
    except (QueryError, KeyError, TypeError, ValueError) as exc:
        return {"error": str(exc), "kind": "query"}
    return {
        "hits": [h.to_json() for h in answer.hits],
        "exact": [[h.score, h.refined_score, [r.score for r in h.regions]] for h in answer.hits],
    }


def hits_from_reply(reply: dict) -> list:
    """The hits of an answer, as core.search.PhotoHit (their scores unrounded)."""
    from sorce_desktop.core.regions import Box
    from sorce_desktop.core.search.answer import MatchedRegion, PhotoHit, RegionKind

    hits = []
    for d, (score, refined, region_scores) in zip(reply["hits"], reply["exact"]):
        regions = [
            MatchedRegion(RegionKind(r["kind"]), Box.from_list(r["box"]), s, r["region"], r.get("words"), r.get("match"))
            for r, s in zip(d["regions"], region_scores)
        ]
        hits.append(
            PhotoHit(
                d["path"], score, Box.from_list(d["box"]), d["region"], -1, d["width"], d["height"], d["source"],
                d.get("text"), Box.from_list(d["refined_box"]) if d.get("refined_box") else None, refined,
                regions, d.get("probability"), d.get("likely"),
                taken=d.get("taken"), taken_source=d.get("taken_source"), place=d.get("place"),
            )
        )
    return hits


def handle_line(line: bytes, answer: Callable[[dict], dict]) -> bytes | None:
    """The reply to one request line (None: not a search request)."""
    if not line.startswith(SEARCH):
        return None
    try:
        request = json.loads(line[len(SEARCH) :])
        if not isinstance(request, dict):
            raise ValueError("not an object")
    except ValueError as exc:
        return json.dumps({"error": f"bad request ({exc})", "kind": "query"}).encode() + b"\n"
    return json.dumps(answer(request)).encode() + b"\n"


class SearchListener:
    """Answers searches for ``watch`` on the library's socket (POSIX; on Windows ``watch`` does not
    listen, and ``search`` answers itself)."""

    def __init__(self, name: str, answer: Callable[[dict], dict]):
        self.name = name
        self.answer = answer
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> bool:
        if sys.platform == "win32":
            return False
        path = socket_address(self.name)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            if os.path.exists(path) and ask_search(self.name, {}, timeout=1.0) is None:
                os.unlink(path)  # left by a process that crashed: nobody answers on it
            old = os.umask(0o077)  # this user only
            try:
                sock.bind(path)
            finally:
                os.umask(old)
            sock.listen(8)
        except OSError as exc:
            sock.close()
            log.warning("search requests cannot be served on %s (%s)", path, exc)
            return False
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, name="search-listener", daemon=True)
        self._thread.start()
        return True

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    conn.settimeout(5.0)
                    reply = handle_line(_read_line(conn.recv), self.answer)
                    if reply is not None:
                        conn.sendall(reply)
                except OSError as exc:
                    log.info("a search request was dropped: %s", exc)

    def close(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            sock.close()
            try:
                os.unlink(socket_address(self.name))
            except OSError:
                pass
