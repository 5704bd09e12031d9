"""A tiny XMPP server for the harness tests: no TLS, SASL PLAIN and SCRAM-SHA-256 (server
side written from RFC 5802 here, independently of the client), bind, message routing.

Accounts are `{localpart: password}`; `drop_to` names localparts whose messages vanish
(to test lost accounting); `bounce_to` localparts get a service-unavailable error back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import os
import xml.etree.ElementTree as ET
from typing import Any, cast

SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
FEATURES_SASL = (f"<stream:features><mechanisms xmlns='{SASL}'><mechanism>SCRAM-SHA-256"
                 "</mechanism><mechanism>PLAIN</mechanism></mechanisms></stream:features>")
FEATURES_BIND = ("<stream:features><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/>"
                 "</stream:features>")


class FakeXmppWorld:
    def __init__(self, accounts: dict[str, str], domain: str = "x.test") -> None:
        self.accounts = accounts
        self.domain = domain
        self.sessions: dict[str, FakeXmpp] = {}
        self.drop_to: set[str] = set()
        self.bounce_to: set[str] = set()
        self.logins = 0
        self.mechanisms: list[str] = []


class FakeXmpp(asyncio.Protocol):
    def __init__(self, world: FakeXmppWorld) -> None:
        self.w = world
        self.user = ""
        self.jid = ""
        self.scram: dict[str, Any] = {}

    def connection_made(self, transport: Any) -> None:
        self.t = transport
        self._restart()

    def _restart(self) -> None:
        self.parser: ET.XMLPullParser = ET.XMLPullParser(events=("start", "end"))
        self.depth = 0

    def connection_lost(self, exc: Exception | None) -> None:
        if self.w.sessions.get(self.jid) is self:
            del self.w.sessions[self.jid]

    def send(self, s: str) -> None:
        self.t.write(s.encode())

    def data_received(self, data: bytes) -> None:
        self.parser.feed(data)
        for ev, el in cast(list[tuple[str, ET.Element]], list(self.parser.read_events())):
            if ev == "start":
                self.depth += 1
                if self.depth == 1:
                    self.root = el
                    self.send("<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
                              "xmlns:stream='http://etherx.jabber.org/streams' id='s1' "
                              f"from='{self.w.domain}' version='1.0'>")
                    self.send(FEATURES_BIND if self.user else FEATURES_SASL)
            else:
                self.depth -= 1
                if self.depth == 0:
                    self.send("</stream:stream>")
                    self.t.close()
                    return
                if self.depth == 1:
                    self.root.remove(el)
                    if self.handle(el):  # stream restart
                        self._restart()
                        return

    def sasl_ok(self, extra: str = "") -> bool:
        self.w.logins += 1
        self.send(f"<success xmlns='{SASL}'>{extra}</success>")
        return True

    def handle(self, el: ET.Element) -> bool:
        tag = el.tag.split("}")[1]
        if tag == "auth":
            mech = el.get("mechanism")
            self.w.mechanisms.append(str(mech))
            data = base64.b64decode(el.text or "")
            if mech == "PLAIN":
                _, user, pw = data.decode().split("\0")
                if self.w.accounts.get(user) == pw:
                    self.user = user
                    return self.sasl_ok()
                self.send(f"<failure xmlns='{SASL}'><not-authorized/></failure>")
                return False
            bare = data.decode()[3:]
            attrs = dict(p.split("=", 1) for p in bare.split(","))
            pw = self.w.accounts.get(attrs["n"], "")
            salt, it = os.urandom(16), 4096
            nonce = attrs["r"] + base64.b64encode(os.urandom(12)).decode()
            first = f"r={nonce},s={base64.b64encode(salt).decode()},i={it}"
            self.scram = {"user": attrs["n"], "pw": pw, "salt": salt, "it": it,
                          "bare": bare, "first": first, "known": attrs["n"] in self.w.accounts}
            self.send(f"<challenge xmlns='{SASL}'>{base64.b64encode(first.encode()).decode()}"
                      "</challenge>")
            return False
        if tag == "response":
            s = self.scram
            final = base64.b64decode(el.text or "").decode()
            without_proof, _, proof = final.rpartition(",p=")
            salted = hashlib.pbkdf2_hmac("sha256", s["pw"].encode(), s["salt"], s["it"])
            ck = hmac.new(salted, b"Client Key", "sha256").digest()
            sk = hashlib.sha256(ck).digest()
            am = f"{s['bare']},{s['first']},{without_proof}".encode()
            sig = hmac.new(sk, am, "sha256").digest()
            expected = bytes(a ^ b for a, b in zip(ck, sig, strict=True))
            if not s["known"] or base64.b64decode(proof) != expected:
                self.send(f"<failure xmlns='{SASL}'><not-authorized/></failure>")
                return False
            self.user = s["user"]
            srv = hmac.new(hmac.new(salted, b"Server Key", "sha256").digest(), am,
                           "sha256").digest()
            return self.sasl_ok(base64.b64encode(b"v=" + base64.b64encode(srv)).decode())
        if tag == "iq" and el.find("{urn:ietf:params:xml:ns:xmpp-bind}bind") is not None:
            res = el.findtext("{urn:ietf:params:xml:ns:xmpp-bind}bind/"
                              "{urn:ietf:params:xml:ns:xmpp-bind}resource") or "r"
            self.jid = f"{self.user}@{self.w.domain}/{res}"
            self.w.sessions[self.jid] = self
            self.send(f"<iq type='result' id='{el.get('id')}'><bind xmlns='urn:ietf:params:"
                      f"xml:ns:xmpp-bind'><jid>{self.jid}</jid></bind></iq>")
            return False
        if tag == "message":
            to = el.get("to", "")
            local = to.split("@")[0]
            if local in self.w.drop_to:
                return False
            if local in self.w.bounce_to:
                self.send(f"<message type='error' id='{el.get('id')}' from='{to}'><error "
                          "type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:"
                          "xmpp-stanzas'/></error></message>")
                return False
            peer = self.w.sessions.get(to) or next(
                (s for j, s in self.w.sessions.items() if j.split("/")[0] == to), None)
            if peer is not None:
                el.set("from", self.jid)
                peer.t.write(ET.tostring(el))
        return False
