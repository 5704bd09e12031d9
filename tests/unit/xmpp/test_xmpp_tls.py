"""The memory-BIO TLS layer: handshake, data both ways in pieces, close_notify."""

from __future__ import annotations

import ssl
import struct
from pathlib import Path

import pytest

from gateway.tls import ensure_self_signed, server_context
from xmpp.tls import PIECE, TLSClosed, TLSLayer


class Client:
    def __init__(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        self.inc, self.out = ssl.MemoryBIO(), ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(self.inc, self.out)

    def read_all(self) -> bytes:
        data = b""
        while True:
            try:
                chunk = self.obj.read(65536)
            except ssl.SSLWantReadError:
                return data
            if not chunk:
                return data
            data += chunk


@pytest.fixture(scope="module")
def context(tmp_path_factory: pytest.TempPathFactory) -> ssl.SSLContext:
    d: Path = tmp_path_factory.mktemp("tls")
    return server_context(*ensure_self_signed(d, "example.com", "example.com"))


def connect(context: ssl.SSLContext) -> tuple[TLSLayer, Client]:
    server, client = TLSLayer(context), Client()
    for _ in range(10):
        try:
            client.obj.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        assert server.receive(client.out.read()) == b""
        client.inc.write(server.outgoing())
        if done and server.handshaken:
            return server, client
    raise AssertionError("no handshake")


def records(data: bytes) -> list[int]:
    """Lengths of the TLS records in `data`."""
    out, i = [], 0
    while i < len(data):
        (length,) = struct.unpack("!H", data[i + 3:i + 5])
        out.append(length)
        i += 5 + length
    assert i == len(data)
    return out


def test_small_data_both_ways(context: ssl.SSLContext) -> None:
    server, client = connect(context)
    client.obj.write(b"<presence/>")
    assert server.receive(client.out.read()) == b"<presence/>"
    client.inc.write(server.encrypt(b"<message/>"))
    assert client.read_all() == b"<message/>"


def test_large_output_goes_out_in_small_records(context: ssl.SSLContext) -> None:
    server, client = connect(context)
    data = bytes(range(256)) * 800  # 200 KiB
    wire = server.encrypt(data)
    assert max(records(wire)) <= PIECE + 256
    client.inc.write(wire)
    assert client.read_all() == data


def test_large_input_in_one_chunk(context: ssl.SSLContext) -> None:
    server, client = connect(context)
    data = b"<message><body>" + b"x" * 150_000 + b"</body></message>"
    client.obj.write(data)
    wire = client.out.read()
    assert len(wire) > 4 * PIECE
    assert server.receive(wire) == data


def test_input_split_anywhere(context: ssl.SSLContext) -> None:
    server, client = connect(context)
    data = b"y" * 40_000
    client.obj.write(data)
    wire = client.out.read()
    got = b"".join(server.receive(wire[i:i + 3001]) for i in range(0, len(wire), 3001))
    assert got == data


def test_close_notify_after_data_in_one_big_chunk(context: ssl.SSLContext) -> None:
    server, client = connect(context)
    data = b"z" * 20_000
    client.obj.write(data)
    try:
        client.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    assert server.receive(client.out.read()) == data
    with pytest.raises(TLSClosed):
        server.receive(b"")


def test_close_notify_alone(context: ssl.SSLContext) -> None:
    server, client = connect(context)
    try:
        client.obj.unwrap()
    except ssl.SSLWantReadError:
        pass
    with pytest.raises(TLSClosed):
        server.receive(client.out.read())
    assert server.close_notify()  # our close_notify goes out
