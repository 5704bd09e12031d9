"""ID before login (RFC 2971 §3.3): the largest legal ID (30 pairs of a 30-octet field
and a 1024-octet value, ~32 KB) is read in full in spite of the small pre-login bound;
anything longer is BAD [TOOBIG] and nothing beyond the bound is buffered."""

from mailrelay.imap.proto import CommandReceived, CommandRejected
from mailrelay.imap.proto.reader import ID_MAX_BYTES

from .conftest import Link


def _pairs(value: bytes) -> bytes:
    return b" ".join(b'"f%029d" "%s"' % (i, value) for i in range(30))


def test_largest_legal_id_before_login_is_accepted(link: Link) -> None:
    line = b"a1 ID (" + _pairs(b"v" * 1024) + b")\r\n"
    assert len(line) > 30_000
    evs = []
    for i in range(0, len(line), 4096):  # as it arrives from the network
        evs += link.send(line[i : i + 4096])
    assert len(evs) == 1 and isinstance(evs[0], CommandReceived), (evs, link.out())
    params = evs[0].command.params
    assert len(params) == 30 and all(len(v) == 1024 for _, v in params)


def test_id_with_every_octet_escaped_or_as_literals_is_accepted(link: Link) -> None:
    escaped = b'\\"' * 1024  # 1024 octets of value, 2048 on the wire
    evs = link.send(b"a1 ID (" + _pairs(escaped) + b")\r\n")
    assert len(evs) == 1 and isinstance(evs[0], CommandReceived), link.out()
    assert evs[0].command.params[0][1] == '"' * 1024
    parts = b" ".join(b'"f%d" {1024+}\r\n' % i + b"x" * 1024 for i in range(30))
    evs = link.send(b"a2 ID (" + parts + b")\r\n")
    assert len(evs) == 1 and isinstance(evs[0], CommandReceived), link.out()


def test_id_over_the_bound_is_bad_and_not_buffered(link: Link) -> None:
    huge = b"a1 ID (" + _pairs(b"v" * 4000) + b")\r\n"
    assert len(huge) > ID_MAX_BYTES
    evs = []
    for i in range(0, len(huge), 4096):
        evs += link.send(huge[i : i + 4096])
        assert len(link.core._reader.buf) <= ID_MAX_BYTES + 4096
    assert evs == [CommandRejected("a1", evs[0].text)]
    out = link.out()
    assert out.startswith(b"a1 BAD [TOOBIG] ID too long"), out
    assert link.command(b"a2 NOOP").tag == "a2"  # the connection goes on


def test_id_fields_and_values_beyond_rfc_sizes_are_bad(link: Link) -> None:
    link.send(b'a1 ID ("f" "' + b"v" * 1025 + b'")\r\n')
    assert link.out().startswith(b"a1 BAD"), "value > 1024 octets"
    link.send(b'a2 ID ("' + b"f" * 31 + b'" "v")\r\n')
    assert link.out().startswith(b"a2 BAD"), "field > 30 octets"


def test_other_commands_keep_the_small_pre_login_bound(link: Link) -> None:
    link.send(b'a1 LOGIN "' + b"x" * 20000 + b'" "p"\r\n')
    assert link.out().startswith(b"a1 BAD [TOOBIG] Command line too long")
    # a long ID *value* does not open the door to another command's line
    link.send(b"a2 NOOP " + b"x" * 20000 + b"\r\n")
    assert link.out().startswith(b"a2 BAD [TOOBIG]")
