"""Convergence stress (issue 18 item 5): N imaplib sessions on one mailbox, real server.

Each session runs random APPEND / STORE / EXPUNGE / MOVE / NOOP concurrently (threads)
and keeps the client-side picture a real client keeps, built only from the untagged
responses in the order they arrived (EXISTS, EXPUNGE, FETCH). Along the way: EXISTS
never shrinks the picture, EXPUNGE names a message that exists, a message's MODSEQ
never goes backwards (RFC 7162 §3.1.1). At the end each session sends one NOOP; its
picture (count, UIDs, flags, MODSEQ) must equal what a fresh SELECT shows.
A third of the sessions use QRESYNC (VANISHED instead of EXPUNGE). Runs over
implicit TLS (imaps) and STARTTLS (imap).
"""

from __future__ import annotations

import asyncio
import imaplib
import random
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from tests.integration.mailutil import PASSWORD, client_tls, seed_city

T = TypeVar("T")
SESSIONS = 6
OPS = 20
SEED = 12
KEYWORDS = ("\\Seen", "\\Flagged", "\\Answered", "$Work", "$Later")
_FETCH = re.compile(rb"^(\d+) \((.*)\)$", re.S)
_UID = re.compile(rb"\bUID (\d+)")
_MODSEQ = re.compile(rb"\bMODSEQ \((\d+)\)")
_FLAGS = re.compile(rb"\bFLAGS \(([^)]*)\)")


def _recording(base: type[imaplib.IMAP4]) -> Any:
    class Recording(base):  # type: ignore[valid-type,misc]
        """imaplib keeps untagged responses by type and loses their order; keep it."""

        def __init__(self, *a: Any, **kw: Any) -> None:
            self.log: list[tuple[str, Any]] = []
            super().__init__(*a, **kw)

        def _append_untagged(self, typ: str, dat: Any) -> None:
            self.log.append((typ, dat))
            super()._append_untagged(typ, dat)

    return Recording


ImapsRec = _recording(imaplib.IMAP4_SSL)
ImapRec = _recording(imaplib.IMAP4)


class Picture:
    """What a client knows of the selected mailbox, from responses in order."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.uids: list[int | None] = []
        self.flags: dict[int, frozenset[str]] = {}
        self.modseq: dict[int, int] = {}

    def absorb(self, log: list[tuple[str, Any]]) -> None:
        for typ, dat in log:
            if typ == "EXISTS":
                n = int(dat)
                assert n >= len(self.uids), f"{self.name}: EXISTS {n} below {len(self.uids)}"
                self.uids += [None] * (n - len(self.uids))
            elif typ == "EXPUNGE":
                n = int(dat)
                assert 1 <= n <= len(self.uids), f"{self.name}: EXPUNGE {n} of {len(self.uids)}"
                uid = self.uids.pop(n - 1)
                if uid is not None:
                    self.flags.pop(uid, None)
                    self.modseq.pop(uid, None)
            elif typ == "VANISHED":  # RFC 7162 §3.2.10, for the QRESYNC sessions
                for uid in _uids(dat):
                    if uid in self.uids:
                        self.uids.remove(uid)
                        self.flags.pop(uid, None)
                        self.modseq.pop(uid, None)
                        continue
                    # announced by EXISTS but its UID not fetched yet: one of the unknown
                    # entries between the known UIDs around it (UIDs ascend with seq)
                    self.uids.pop(self._slot(uid))
            elif typ == "FETCH":
                self._fetch(dat[0] if isinstance(dat, tuple) else dat)
        log.clear()

    def _slot(self, uid: int) -> int:
        below = [i for i, u in enumerate(self.uids) if u is not None and u < uid]
        start = below[-1] + 1 if below else 0
        assert start < len(self.uids) and self.uids[start] is None, (
            f"{self.name}: VANISHED {uid} was never announced")
        return start

    def _fetch(self, data: bytes) -> None:
        m = _FETCH.match(data)
        assert m, data
        seq, items = int(m.group(1)), m.group(2)
        assert 1 <= seq <= len(self.uids), f"{self.name}: FETCH {seq} of {len(self.uids)}"
        um = _UID.search(items)
        assert um, f"{self.name}: FETCH without UID with CONDSTORE on: {data!r}"
        uid = int(um.group(1))
        known = self.uids[seq - 1]
        assert known in (None, uid), f"{self.name}: seq {seq} was UID {known}, now {uid}"
        self.uids[seq - 1] = uid
        if (mm := _MODSEQ.search(items)) is not None:
            ms = int(mm.group(1))
            assert ms >= self.modseq.get(uid, 0), f"{self.name}: MODSEQ of {uid} went back"
            self.modseq[uid] = ms
        if (fm := _FLAGS.search(items)) is not None:
            self.flags[uid] = frozenset(fm.group(1).decode().split()) - {"\\Recent"}

    def state(self) -> list[tuple[int | None, frozenset[str] | None, int | None]]:
        return [(u, self.flags.get(u) if u else None, self.modseq.get(u) if u else None)
                for u in self.uids]


def _uids(dat: bytes) -> list[int]:
    out: list[int] = []
    for part in dat.decode().split(","):
        lo, _, hi = part.partition(":")
        out += range(int(lo), int(hi or lo) + 1)
    return out


def connect(server: Any, starttls: bool, qresync: bool = False) -> Any:
    if starttls:
        m = ImapRec("127.0.0.1", server.ports["imap"], timeout=20)
        m.starttls(client_tls())
    else:
        m = ImapsRec("127.0.0.1", server.ports["imaps"], ssl_context=client_tls(), timeout=20)
    assert m.login("zhang.san", PASSWORD)[0] == "OK"
    assert m.enable("QRESYNC" if qresync else "CONDSTORE")[0] == "OK"
    return m


def open_inbox(m: Any, pic: Picture) -> None:
    m.log.clear()
    assert m.select("INBOX")[0] == "OK"
    pic.absorb(m.log)
    if pic.uids:
        assert m.fetch("1:*", "(UID FLAGS MODSEQ)")[0] == "OK"
        pic.absorb(m.log)


def learn(m: Any, pic: Picture) -> None:
    """Fetch what the client has not been told yet (new messages), by sequence number."""
    unknown = [str(i + 1) for i, u in enumerate(pic.uids) if u is None or u not in pic.flags]
    if unknown:
        assert m.fetch(",".join(unknown), "(UID FLAGS MODSEQ)")[0] == "OK"
        pic.absorb(m.log)


def message(i: int, rng: random.Random) -> bytes:
    body = "x" * rng.randrange(10, 400)
    return (f"From: a@example.org\r\nTo: zhang.san@cx.example\r\nSubject: stress {i}\r\n"
            f"\r\n{body}\r\n").encode()


def worker(server: Any, starttls: bool, n: int, start: threading.Barrier,
           pictures: list[Picture], errors: list[BaseException]) -> None:
    rng = random.Random(1000 + n)
    qresync = n % 3 == 2  # a third of the sessions get VANISHED instead of EXPUNGE
    pic = Picture(f"session {n}" + (" (QRESYNC)" if qresync else ""))
    try:
        m = connect(server, starttls, qresync)
        open_inbox(m, pic)
        start.wait()
        for i in range(OPS):
            known = [u for u in pic.uids if u is not None]
            op = rng.choice(["append", "append", "store", "store", "store", "expunge",
                             "move", "noop"])
            if op == "append" or not known:
                typ, _ = m.append("INBOX", None, None, message(i, rng))
            elif op == "store":
                flags = " ".join(rng.sample(KEYWORDS, rng.randint(1, 2)))
                typ, _ = m.uid("STORE", str(rng.choice(known)),
                               rng.choice(["+FLAGS", "-FLAGS", "FLAGS"]), f"({flags})")
            elif op == "expunge":
                m.uid("STORE", str(rng.choice(known)), "+FLAGS", "(\\Deleted)")
                pic.absorb(m.log)
                typ, _ = m.expunge()
            elif op == "move":
                typ, _ = m.uid("MOVE", str(rng.choice(known)), "Archive")
            else:
                typ, _ = m.noop()
            assert typ == "OK", (op, typ)
            pic.absorb(m.log)
            if qresync or rng.random() < 0.6:
                learn(m, pic)  # what a client does after EXISTS (sometimes later)
        start.wait()  # everyone is done writing
        assert m.noop()[0] == "OK"
        pic.absorb(m.log)
        learn(m, pic)
        pictures[n] = pic
        m.logout()
    except BaseException as exc:  # reported by the test, with the session's name
        errors.append(exc)
        start.abort()


async def in_thread(fn: Callable[[], T]) -> T:
    """Run a blocking client in its own thread. Not asyncio.to_thread: the server
    hashes passwords in the default executor, which blocked clients would fill."""
    out: list[T] = []
    t = threading.Thread(target=lambda: out.append(fn()))
    t.start()
    while t.is_alive():
        await asyncio.sleep(0.05)
    assert out, "the client thread failed (see its traceback above)"
    return out[0]


@pytest.mark.parametrize("starttls", [False, True], ids=["imaps", "starttls"])
async def test_sessions_converge_on_one_mailbox(server: Any, starttls: bool) -> None:
    await seed_city(server)
    pictures: list[Picture] = [Picture("unset")] * SESSIONS

    def seed() -> None:
        m = connect(server, starttls)
        rng = random.Random(7)
        for i in range(SEED):
            assert m.append("INBOX", None, None, message(i, rng))[0] == "OK"
        m.logout()

    await in_thread(seed)
    errors: list[BaseException] = []
    start = threading.Barrier(SESSIONS, timeout=60)
    threads = [
        threading.Thread(target=worker, args=(server, starttls, n, start, pictures, errors))
        for n in range(SESSIONS)
    ]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        await asyncio.sleep(0.05)
    assert not errors, errors[0]

    def fresh() -> Picture:
        m = connect(server, starttls)
        pic = Picture("fresh SELECT")
        open_inbox(m, pic)
        m.logout()
        return pic

    truth = await in_thread(fresh)
    assert truth.uids, "the stress left an empty mailbox: it tested nothing"
    assert all(u is not None for u in truth.uids)
    for pic in pictures:
        assert len(pic.uids) == len(truth.uids), pic.name
        assert pic.state() == truth.state(), pic.name
