"""A lean XMPP client on raw asyncio streams (RFC 6120/6121), built for load.

STARTTLS (RFC 6120 §5) or direct TLS (XEP-0368), SASL PLAIN (RFC 4616) or SCRAM-SHA-256 /
SCRAM-SHA-1 (RFC 5802, RFC 7677; the client math is here, with hashlib/hmac, and the server
signature is verified), resource binding (RFC 6120 §7), then `<message>` and `<presence>`.
Incoming XML goes through expat (`XMLPullParser`); each top-level element of the stream is
handed to `on_stanza` and dropped, so a long run does not grow the tree.

Errors carry a class for the accounting: `connect`, `tls`, `timeout`, `disconnect`,
`xmpp-auth` (SASL failure), `xmpp-stream` (stream error), `xmpp-bind`, `protocol`.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import ssl
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import cast
from xml.sax.saxutils import escape, quoteattr

from load.options import Target
from load.smtpclient import LoadError, abort_writer

NS_STREAM = "http://etherx.jabber.org/streams"
NS_CLIENT = "jabber:client"
NS_TLS = "urn:ietf:params:xml:ns:xmpp-tls"
NS_SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
NS_BIND = "urn:ietf:params:xml:ns:xmpp-bind"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
MECHANISMS = ("SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN")
_HASHES = {"SCRAM-SHA-256": "sha256", "SCRAM-SHA-1": "sha1"}
_SALTED: dict[tuple[str, str, bytes, int], bytes] = {}  # RFC 5802 §5.1: clients may cache


def _q(tag: str, ns: str = NS_CLIENT) -> str:
    return f"{{{ns}}}{tag}"


# -- SCRAM (RFC 5802) client math ---------------------------------------------------------------
def saslname(name: str) -> str:
    """RFC 5802 §5.1: `=` and `,` in the username are escaped."""
    return name.replace("=", "=3D").replace(",", "=2C")


def parse_attrs(msg: bytes) -> dict[str, str]:
    out = {}
    for part in msg.decode("utf-8").split(","):
        k, sep, v = part.partition("=")
        if sep and len(k) == 1:
            out[k] = v
    return out


class ScramClient:
    """One SCRAM exchange (no channel binding: gs2 header `n,,`)."""

    def __init__(self, mechanism: str, username: str, password: str,
                 nonce: str | None = None) -> None:
        self.hash = _HASHES[mechanism]
        self.password = password
        self.nonce = nonce or base64.b64encode(os.urandom(18)).decode("ascii")
        self.first_bare = f"n={saslname(username)},r={self.nonce}"
        self.server_signature = b""

    def first(self) -> bytes:
        return ("n,," + self.first_bare).encode("utf-8")

    def final(self, server_first: bytes) -> bytes:
        a = parse_attrs(server_first)
        if "m" in a or not a.get("r", "").startswith(self.nonce) or "s" not in a or "i" not in a:
            raise LoadError("bad SCRAM server-first message", "xmpp-auth")
        salt, iters = base64.b64decode(a["s"]), int(a["i"])
        key = (self.hash, self.password, salt, iters)
        salted = _SALTED.get(key)
        if salted is None:
            salted = hashlib.pbkdf2_hmac(self.hash, self.password.encode("utf-8"), salt, iters)
            if len(_SALTED) < 100_000:
                _SALTED[key] = salted
        client_key = hmac.new(salted, b"Client Key", self.hash).digest()
        stored_key = hashlib.new(self.hash, client_key).digest()
        without_proof = f"c=biws,r={a['r']}"
        auth_message = ",".join((self.first_bare, server_first.decode("utf-8"),
                                 without_proof)).encode("utf-8")
        signature = hmac.new(stored_key, auth_message, self.hash).digest()
        proof = bytes(x ^ y for x, y in zip(client_key, signature, strict=True))
        server_key = hmac.new(salted, b"Server Key", self.hash).digest()
        self.server_signature = hmac.new(server_key, auth_message, self.hash).digest()
        return f"{without_proof},p={base64.b64encode(proof).decode('ascii')}".encode()

    def verify(self, server_final: bytes) -> None:
        a = parse_attrs(server_final)
        if "e" in a:
            raise LoadError(f"SCRAM server error {a['e']}", "xmpp-auth")
        v = base64.b64decode(a.get("v", ""))
        if not hmac.compare_digest(v, self.server_signature):
            raise LoadError("SCRAM server signature does not verify", "xmpp-auth")


# -- the stream ---------------------------------------------------------------------------------
class XmppClient:
    """One c2s stream. Create with `await XmppClient.connect(...)`; then `start_reader()`."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                 domain: str, timeout: float) -> None:
        self.reader = reader
        self.writer = writer
        self.domain = domain
        self.timeout = timeout
        self.jid = ""
        self.mechanism = ""
        self._parser: ET.XMLPullParser | None = None
        self._root: ET.Element | None = None
        self._depth = 0
        self._ready: list[ET.Element] = []
        self.features: ET.Element | None = None
        self.on_stanza: Callable[[ET.Element], None] | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()
        self.close_reason = ""

    @classmethod
    async def connect(cls, target: Target, domain: str, user: str, password: str, *,
                      io_timeout: float = 30.0, ssl_ctx: ssl.SSLContext | None = None,
                      direct_tls: bool = False, starttls: bool = True,
                      mechanism: str | None = None, resource: str = "load",
                      server_hostname: str | None = None) -> XmppClient:
        """Connect and log in: TLS, SASL, bind. `user` may be `local` or `local@domain`."""
        ctx = ssl_ctx or ssl.create_default_context()
        async with asyncio.timeout(io_timeout):
            try:
                reader, writer = await asyncio.open_connection(
                    target.host, target.port, limit=1 << 20, ssl=ctx if direct_tls else None,
                    server_hostname=(server_hostname or domain) if direct_tls else None)
            except ssl.SSLError:
                raise
            except OSError as e:
                raise LoadError(f"connect {target}: {e}", "connect") from e
            c = cls(reader, writer, domain, io_timeout)
            try:
                await c._open()
                if starttls and not direct_tls:
                    if c._feature(NS_TLS, "starttls") is None:
                        raise LoadError("server does not offer STARTTLS", "tls")
                    c.send_raw(f"<starttls xmlns='{NS_TLS}'/>")
                    el = await c.next_element()
                    if el.tag != _q("proceed", NS_TLS):
                        raise LoadError("STARTTLS refused", "tls")
                    try:
                        await writer.start_tls(ctx, server_hostname=server_hostname or domain)
                    except ssl.SSLError as e:
                        raise LoadError(f"TLS handshake: {e}", "tls") from e
                    await c._open()
                await c._auth(user.split("@", 1)[0], password, mechanism)
                await c._open()
                await c._bind(resource)
            except BaseException:
                c.abort()
                raise
            return c

    # -- low level ------------------------------------------------------------------------------
    def send_raw(self, xml: str) -> None:
        self.writer.write(xml.encode("utf-8"))

    async def _open(self) -> None:
        """(Re)start the stream (RFC 6120 §4.3.3: new parser) and read its features."""
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._root, self._depth, self._ready = None, 0, []
        self.send_raw(f"<?xml version='1.0'?><stream:stream to={quoteattr(self.domain)} "
                      f"version='1.0' xml:lang='en' xmlns='{NS_CLIENT}' "
                      f"xmlns:stream='{NS_STREAM}'>")
        el = await self.next_element()
        if el.tag != _q("features", NS_STREAM):
            raise LoadError(f"expected stream features, got {el.tag}", "protocol")
        self.features = el

    def _feature(self, ns: str, tag: str) -> ET.Element | None:
        return None if self.features is None else self.features.find(_q(tag, ns))

    def _feed(self, data: bytes) -> None:
        assert self._parser is not None
        try:
            self._parser.feed(data)
            events = cast(list[tuple[str, ET.Element]], list(self._parser.read_events()))
        except ET.ParseError as e:
            raise LoadError(f"bad XML from server: {e}", "protocol") from e
        for ev, el in events:
            if ev == "start":
                self._depth += 1
                if self._depth == 1:
                    if el.tag != _q("stream", NS_STREAM):
                        raise LoadError(f"not an XMPP stream: {el.tag}", "protocol")
                    self._root = el
            else:
                self._depth -= 1
                if self._depth == 1:
                    self._ready.append(el)
                    assert self._root is not None
                    self._root.remove(el)
                elif self._depth == 0:
                    raise LoadError("server closed the stream", "disconnect")
        for el in self._ready:
            if el.tag == _q("error", NS_STREAM):
                cond = next((c.tag.split("}")[-1] for c in el), "undefined-condition")
                raise LoadError(f"stream error {cond}", "xmpp-stream")

    async def next_element(self) -> ET.Element:
        """The next top-level element (during negotiation, before the reader task runs)."""
        while not self._ready:
            data = await self.reader.read(65536)
            if not data:
                raise LoadError("server closed the connection", "disconnect")
            self._feed(data)
        return self._ready.pop(0)

    # -- SASL and bind --------------------------------------------------------------------------
    async def _auth(self, user: str, password: str, mechanism: str | None) -> None:
        mechs = self._feature(NS_SASL, "mechanisms")
        offered = [m.text or "" for m in mechs] if mechs is not None else []
        choice = mechanism or next((m for m in MECHANISMS if m in offered), None)
        if choice is None or choice not in offered:
            raise LoadError(f"no usable SASL mechanism (offered {offered})", "xmpp-auth")
        self.mechanism = choice

        def auth(payload: bytes) -> None:
            self.send_raw(f"<auth xmlns='{NS_SASL}' mechanism='{choice}'>"
                          f"{base64.b64encode(payload).decode('ascii') or '='}</auth>")

        if choice == "PLAIN":
            auth(f"\0{user}\0{password}".encode())
            el = await self.next_element()
        else:
            scram = ScramClient(choice, user, password)
            auth(scram.first())
            el = await self.next_element()
            if el.tag != _q("challenge", NS_SASL):
                raise LoadError(f"SASL {choice} refused: {_condition(el)}", "xmpp-auth")
            reply = scram.final(base64.b64decode(el.text or ""))
            self.send_raw(f"<response xmlns='{NS_SASL}'>"
                          f"{base64.b64encode(reply).decode('ascii')}</response>")
            el = await self.next_element()
            if el.tag == _q("challenge", NS_SASL):  # server-final as a challenge (RFC 6120 §6.4.6)
                scram.verify(base64.b64decode(el.text or ""))
                self.send_raw(f"<response xmlns='{NS_SASL}'/>")
                el = await self.next_element()
            elif el.tag == _q("success", NS_SASL):
                scram.verify(base64.b64decode(el.text or ""))
        if el.tag != _q("success", NS_SASL):
            raise LoadError(f"SASL {choice} failed: {_condition(el)}", "xmpp-auth")

    async def _bind(self, resource: str) -> None:
        if self._feature(NS_BIND, "bind") is None:
            raise LoadError("server does not offer resource binding", "xmpp-bind")
        self.send_raw(f"<iq type='set' id='bind1'><bind xmlns='{NS_BIND}'><resource>"
                      f"{escape(resource)}</resource></bind></iq>")
        while True:
            el = await self.next_element()
            if el.tag == _q("iq") and el.get("id") == "bind1":
                break
        jid = el.find(f"{_q('bind', NS_BIND)}/{_q('jid', NS_BIND)}")
        if el.get("type") != "result" or jid is None or not jid.text:
            raise LoadError(f"bind failed: {_condition(el)}", "xmpp-bind")
        self.jid = jid.text

    # -- after login ----------------------------------------------------------------------------
    def start_reader(self, on_stanza: Callable[[ET.Element], None]) -> None:
        """Hand every later top-level element to `on_stanza` (in the event loop)."""
        self.on_stanza = on_stanza
        pending, self._ready = self._ready, []
        for el in pending:
            on_stanza(el)
        self.reader_task = asyncio.ensure_future(self._read_loop())

    async def _read_loop(self) -> None:
        try:
            while True:
                data = await self.reader.read(65536)
                if not data:
                    raise LoadError("server closed the connection", "disconnect")
                self._feed(data)
                ready, self._ready = self._ready, []
                assert self.on_stanza is not None
                for el in ready:
                    self.on_stanza(el)
        except asyncio.CancelledError:
            self.close_reason = self.close_reason or "closed"
            raise
        except Exception as e:
            self.close_reason = getattr(e, "cls", None) or "disconnect"
        finally:
            self.closed.set()

    def presence(self) -> None:
        """Initial presence (RFC 6121 §4.2): become available."""
        self.send_raw("<presence/>")

    def message(self, to: str, body: str, mid: str, mtype: str = "chat") -> None:
        self.send_raw(f"<message to={quoteattr(to)} id={quoteattr(mid)} type='{mtype}'>"
                      f"<body>{escape(body)}</body></message>")

    async def close(self) -> None:
        """Close the stream politely (RFC 6120 §4.4), then the socket."""
        try:
            self.send_raw("</stream:stream>")
            async with asyncio.timeout(min(self.timeout, 2.0)):
                await self.writer.drain()
                if self.reader_task is not None:
                    await asyncio.wait({self.reader_task}, timeout=1.0)
        except Exception:
            pass
        finally:
            if self.reader_task is not None:
                self.reader_task.cancel()
            self.abort()

    def abort(self) -> None:
        abort_writer(self.writer)


def _condition(el: ET.Element) -> str:
    """The defined condition of a SASL failure or stanza error, for messages and classes."""
    for child in el.iter():
        if child is not el and child.tag.startswith("{") and child.tag.split("}")[1] not in (
                "text", "error"):
            return child.tag.split("}")[1]
    return el.tag.split("}")[-1]


def stanza_error(el: ET.Element) -> str:
    """`xmpp-<condition>` for a stanza of type error (RFC 6120 §8.3)."""
    err = el.find(_q("error"))
    if err is None:
        return "xmpp-error"
    for child in err:
        if child.tag.startswith(f"{{{NS_STANZAS}}}") and not child.tag.endswith("}text"):
            return "xmpp-" + child.tag.split("}")[1]
    return "xmpp-error"
