"""XMPP over WebSocket (RFC 7395) against the running server, with the `websockets`
package as the client: SCRAM-SHA-256 login on the https and http listeners, messages both
ways with a slixmpp client on TCP, stream management resumption after the WebSocket
drops, host-meta (XEP-0156) naming the endpoint, and refusals (no `xmpp` sub-protocol,
a binary frame, an oversized message)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import ssl
import urllib.request
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import websockets

from tests.netutil import free_port

from .test_xmpp import DOMAIN, PASSWORD, TIMEOUT

pytestmark = pytest.mark.integration

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND = "urn:ietf:params:xml:ns:xmpp-bind"
SM = "urn:xmpp:sm:3"
OPEN = f"<open xmlns='{FRAMING}' to='{DOMAIN}' version='1.0'/>"



@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    # host-meta names the configured https port: it needs a known one here.
    return {"auth": {"scram_iterations": 4096},
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": f"127.0.0.1:{free_port()}"}}


def tls() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the self-signed test certificate
    return ctx


class WSClient:
    """A minimal RFC 7395 client: one XML element per WebSocket text message."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws

    @classmethod
    async def connect(cls, srv: Any, scheme: str = "wss") -> WSClient:
        port = srv.ports["https" if scheme == "wss" else "http"]
        ws = await websockets.connect(f"{scheme}://127.0.0.1:{port}/xmpp-websocket",
                                      subprotocols=["xmpp"],  # type: ignore[list-item]
                                      ssl=tls() if scheme == "wss" else None,
                                      open_timeout=TIMEOUT)
        assert ws.subprotocol == "xmpp"
        return cls(ws)

    async def send(self, xml: str) -> None:
        await self.ws.send(xml)

    async def recv(self) -> ET.Element:
        import asyncio
        text = await asyncio.wait_for(self.ws.recv(), TIMEOUT)
        assert isinstance(text, str)  # RFC 7395 §3.2: text frames
        return ET.fromstring(text)  # each message one complete document

    async def until(self, tag: str) -> ET.Element:
        while True:
            el = await self.recv()
            if el.tag == tag:
                return el

    async def open(self) -> ET.Element:
        await self.send(OPEN)
        opened = await self.recv()
        assert opened.tag == f"{{{FRAMING}}}open" and opened.get("from") == DOMAIN
        return await self.recv()  # stream features

    async def login(self, user: str) -> None:
        features = await self.open()
        mechs = [m.text for m in features.iter(f"{{{SASL}}}mechanism")]
        assert "SCRAM-SHA-256" in mechs
        await scram_sha256(self, user, PASSWORD)
        features = await self.open()  # RFC 7395 §3.5: restart with a new <open/>
        assert features.find(f"{{{BIND}}}bind") is not None
        assert features.find(f"{{{SM}}}sm") is not None

    async def bind(self) -> str:
        await self.send(f"<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='{BIND}'>"
                        "<resource>web</resource></bind></iq>")
        res = await self.until("{jabber:client}iq")
        jid = res.findtext(f"{{{BIND}}}bind/{{{BIND}}}jid")
        assert jid
        return jid


async def scram_sha256(c: WSClient, user: str, password: str) -> None:
    """RFC 5802 / RFC 7677 client side, written here from the RFC."""
    nonce = secrets.token_urlsafe(18)
    first_bare = f"n={user},r={nonce}"
    await c.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>"
                 f"{base64.b64encode(('n,,' + first_bare).encode()).decode()}</auth>")
    challenge = await c.recv()
    assert challenge.tag == f"{{{SASL}}}challenge", ET.tostring(challenge)
    server_first = base64.b64decode(challenge.text or "").decode()
    attrs = dict(kv.split("=", 1) for kv in server_first.split(","))
    assert attrs["r"].startswith(nonce)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                 int(attrs["i"]))
    client_key = hmac.new(salted, b"Client Key", "sha256").digest()
    stored = hashlib.sha256(client_key).digest()
    final_bare = f"c={base64.b64encode(b'n,,').decode()},r={attrs['r']}"
    auth_msg = f"{first_bare},{server_first},{final_bare}".encode()
    sig = hmac.new(stored, auth_msg, "sha256").digest()
    proof = base64.b64encode(bytes(a ^ b for a, b in zip(client_key, sig, strict=True)))
    await c.send(f"<response xmlns='{SASL}'>"
                 f"{base64.b64encode(f'{final_bare},p={proof.decode()}'.encode()).decode()}"
                 "</response>")
    success = await c.recv()
    assert success.tag == f"{{{SASL}}}success", ET.tostring(success)
    server_key = hmac.new(salted, b"Server Key", "sha256").digest()
    expected = base64.b64encode(hmac.new(server_key, auth_msg, "sha256").digest()).decode()
    assert base64.b64decode(success.text or "").decode() == f"v={expected}"


@pytest.mark.parametrize("scheme", ["wss", "ws"])
async def test_websocket_login_and_chat_with_tcp_client(xmpp: Any, scheme: str) -> None:
    li = await xmpp.connect("li.si")  # slixmpp over TCP
    web = await WSClient.connect(xmpp, scheme)
    await web.login("zhang.san")
    jid = await web.bind()
    assert jid == f"zhang.san@{DOMAIN}/web"
    await web.send("<presence xmlns='jabber:client'/>")
    await web.send(f"<message xmlns='jabber:client' to='li.si@{DOMAIN}' type='chat'>"
                   "<body>来自浏览器</body></message>")
    msg = await li.next_message()
    assert msg["body"] == "来自浏览器" and msg["from"] == jid
    li.send_message(mto=jid, mbody="收到", mtype="chat")
    got = await web.until("{jabber:client}message")
    assert got.findtext("{jabber:client}body") == "收到"
    await web.send(f"<close xmlns='{FRAMING}'/>")
    closed = await web.until(f"{{{FRAMING}}}close")  # RFC 7395 §3.6
    assert closed is not None


async def test_websocket_stream_management_resume(xmpp: Any) -> None:
    li = await xmpp.connect("li.si")
    web = await WSClient.connect(xmpp)
    await web.login("zhang.san")
    jid = await web.bind()
    await web.send(f"<enable xmlns='{SM}' resume='true'/>")
    enabled = await web.until(f"{{{SM}}}enabled")
    previd = enabled.get("id")
    assert previd and enabled.get("resume") == "true"
    await web.send("<presence xmlns='jabber:client'/>")
    li.send_message(mto=jid, mbody="一", mtype="chat")
    await web.until("{jabber:client}message")
    # The WebSocket drops without <close/> (a train into a tunnel) ...
    web.ws.transport.abort()
    li.send_message(mto=jid, mbody="二", mtype="chat")  # queued for the session
    # ... and a new one resumes the session: nothing handled is sent twice, nothing lost.
    web2 = await WSClient.connect(xmpp)
    await web2.login("zhang.san")
    await web2.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    resumed = await web2.until(f"{{{SM}}}resumed")
    assert resumed.get("previd") == previd
    bodies = []
    while "二" not in bodies:
        msg = await web2.until("{jabber:client}message")
        bodies.append(msg.findtext("{jabber:client}body"))
    assert bodies == ["一", "二"]  # h=0: the first is sent again, then the second


async def test_websocket_refusals(xmpp: Any) -> None:
    port = xmpp.ports["http"]
    with pytest.raises(websockets.exceptions.InvalidStatus) as no_proto:
        await websockets.connect(f"ws://127.0.0.1:{port}/xmpp-websocket", open_timeout=TIMEOUT)
    assert no_proto.value.response.status_code == 400
    web = await WSClient.connect(xmpp, "ws")
    await web.open()
    await web.ws.send(b"\x00binary")
    err = await web.recv()
    assert err.tag == "{http://etherx.jabber.org/streams}error"
    assert err.find("{urn:ietf:params:xml:ns:xmpp-streams}unsupported-encoding") is not None
    web = await WSClient.connect(xmpp, "ws")
    await web.open()
    await web.send("<message xmlns='jabber:client'><body>" + "x" * 300000 + "</body></message>")
    err = await web.until("{http://etherx.jabber.org/streams}error")
    assert err.find("{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None
    web = await WSClient.connect(xmpp, "ws")
    await web.send("<open xmlns='urn:ietf:params:xml:ns:xmpp-framing' to='cx.example'")
    err = await web.until("{http://etherx.jabber.org/streams}error")
    assert err.find("{urn:ietf:params:xml:ns:xmpp-streams}not-well-formed") is not None


async def test_host_meta_names_the_websocket(xmpp: Any) -> None:
    import asyncio
    base = f"http://127.0.0.1:{xmpp.ports['http']}/.well-known"

    def get(url: str) -> tuple[bytes, str]:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as resp:
            return resp.read(), resp.headers.get("Access-Control-Allow-Origin", "")
    xrd, cors = await asyncio.to_thread(get, f"{base}/host-meta")
    assert cors == "*"
    root = ET.fromstring(xrd)
    assert root.tag == "{http://docs.oasis-open.org/ns/xri/xrd-1.0}XRD"
    (link,) = root
    assert link.get("rel") == "urn:xmpp:alt-connections:websocket"
    jrd, _ = await asyncio.to_thread(get, f"{base}/host-meta.json")
    (entry,) = json.loads(jrd)["links"]
    assert entry == {"rel": link.get("rel"), "href": link.get("href")}
    # The advertised endpoint names the https listener's port and our public host name.
    assert link.get("href") == f"wss://mail.cx.example:{xmpp.ports['https']}/xmpp-websocket"
