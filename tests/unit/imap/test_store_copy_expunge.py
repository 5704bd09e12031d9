"""STORE, COPY, MOVE, EXPUNGE, UID EXPUNGE, CHECK, CLOSE, UNSELECT (RFC 3501 §6.4, 4315, 6851)."""

import pytest

from mailrelay.imap.proto import (
    Check,
    Close,
    Copy,
    Expunge,
    Move,
    SequenceSet,
    Store,
    Unselect,
)

from .conftest import Link


def selected() -> Link:
    link = Link()
    link.select()
    return link


def test_store_variants() -> None:
    link = selected()
    assert link.command(b"a STORE 1:3 +FLAGS (\\Seen \\deleted)") == Store(
        "a", SequenceSet(((1, 3),)), "+", ("\\Seen", "\\Deleted")
    )
    assert link.command(b"a STORE 1 -FLAGS.SILENT \\Seen") == Store(
        "a", SequenceSet(((1, 1),)), "-", ("\\Seen",), silent=True
    )
    assert link.command(b"a UID STORE 5:* FLAGS ()") == Store(
        "a", SequenceSet(((5, None),)), "", (), uid=True
    )
    cmd = link.command(b"a STORE 7 (UNCHANGEDSINCE 320162338) +FLAGS.SILENT ($Important)")
    assert cmd.unchangedsince == 320162338 and cmd.flags == ("$Important",)


@pytest.mark.parametrize(
    "line",
    [
        b"a STORE 1 FLAG (\\Seen)",
        b"a STORE 1 +FLAGS",
        b"a STORE x FLAGS ()",
        b"a STORE 1 (FOO 1) FLAGS ()",
    ],
)
def test_store_errors(line: bytes) -> None:
    link = selected()
    link.send(line + b"\r\n")
    assert link.out().startswith(b"a BAD")


def test_copy_move() -> None:
    link = selected()
    assert link.command(b"a COPY 2:4 Archive") == Copy("a", SequenceSet(((2, 4),)), "Archive")
    assert link.command(b'a UID MOVE 1,5 "Trash"') == Move(
        "a", SequenceSet(((1, 1), (5, 5))), "Trash", uid=True
    )
    assert link.command(b"a MOVE $ Junk").seqset.saved


def test_expunge_family() -> None:
    link = selected()
    assert link.command(b"a EXPUNGE") == Expunge("a")
    assert link.command(b"a UID EXPUNGE 3000:3002") == Expunge("a", SequenceSet(((3000, 3002),)))
    assert link.command(b"a CHECK") == Check("a")
    assert link.command(b"a UNSELECT") == Unselect("a")
    assert link.command(b"a CLOSE") == Close("a")


def test_uid_unknown_subcommand() -> None:
    link = selected()
    link.send(b"a UID FROB 1\r\n")
    assert link.out().startswith(b"a BAD")
