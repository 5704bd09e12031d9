"""XMPP end to end: the real server on 127.0.0.1, slixmpp clients over TLS.

Login with each SASL mechanism (STARTTLS and direct TLS), roster with unit groups,
presence and chat between two users, offline delivery, carbons, vCard, disco, blocking.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import pytest
import slixmpp

pytestmark = pytest.mark.integration

DOMAIN = "cx.example"
PASSWORD = "Secret-pass-123"
TIMEOUT = 10.0

logging.getLogger("slixmpp").setLevel(logging.ERROR)


def insecure_context() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE  # the test server's certificate is self-signed
    return ctx


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives."""

    def __init__(self, jid: str, password: str = PASSWORD, *, mechanism: str | None = None,
                 direct_tls: bool = False, presence: bool = True) -> None:
        super().__init__(jid, password, sasl_mech=mechanism)
        self.ssl_context = insecure_context()
        self.enable_direct_tls = direct_tls
        self.enable_starttls = not direct_tls
        self.enable_plaintext = False
        self.auto_authorize = None  # answer subscription requests ourselves
        self.auto_subscribe = False
        self.send_initial_presence = presence
        self.started = asyncio.Event()
        self.failed = asyncio.Event()
        self.messages: asyncio.Queue[Any] = asyncio.Queue()
        self.presences: asyncio.Queue[Any] = asyncio.Queue()
        self.stream_errors: list[str] = []
        for plugin in ("xep_0030", "xep_0054", "xep_0191", "xep_0280", "xep_0199",
                       "xep_0092", "xep_0012", "xep_0202"):
            self.register_plugin(plugin)
        self.add_event_handler("session_start", self._on_start)
        self.add_event_handler("failed_all_auth", lambda _e: self.failed.set())
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("message_error", self.messages.put_nowait)
        self.add_event_handler("presence", self.presences.put_nowait)
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(
            e["condition"]))

    async def _on_start(self, _event: Any) -> None:
        await self.get_roster()
        if self.send_initial_presence:
            self.send_presence()
        self.started.set()

    async def login(self, port: int) -> Client:
        self.connect("127.0.0.1", port)
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(self.started.wait()),
             asyncio.ensure_future(self.failed.wait())],
            timeout=TIMEOUT, return_when=asyncio.FIRST_COMPLETED)
        for task in _:
            task.cancel()
        if not self.started.is_set():
            raise AssertionError(f"login of {self.boundjid} failed")
        return self

    async def next_message(self, timeout: float = TIMEOUT, body: bool = True) -> Any:
        while True:
            msg = await asyncio.wait_for(self.messages.get(), timeout)
            if not body or msg["body"]:
                return msg

    async def presence_from(self, bare: str, ptype: str | None = None) -> Any:
        while True:
            pres = await asyncio.wait_for(self.presences.get(), TIMEOUT)
            if pres["from"].bare == bare and (ptype is None or pres["type"] == ptype):
                return pres

    async def close(self) -> None:
        self.disconnect()
        try:
            await asyncio.wait_for(self.disconnected, 1)
        except (TimeoutError, asyncio.CancelledError):
            pass


async def seed(services: Any) -> None:
    d = services.directory
    await d.add_unit("finance", "财政局")
    await d.add_unit("health", "卫生健康委员会")
    await d.add_user("zhang.san", "finance", "张三", title="科长", password=PASSWORD)
    await d.add_user("li.si", "finance", "李四", password=PASSWORD)
    await d.add_user("wang.wu", "health", "王五", password=PASSWORD)


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"auth": {"scram_iterations": 4096, "lockout_failures": 3, "lockout_seconds": 60}}


@pytest.fixture
async def xmpp(services: Any) -> AsyncIterator[Any]:
    """The whole server with three seeded users."""
    from gateway.app import RunningServer
    await seed(services)
    srv = RunningServer(services)
    clients: list[Client] = []

    async def connect(user: str, **kw: Any) -> Client:
        direct = kw.get("direct_tls", False)
        local, _, resource = user.partition("/")
        c = Client(f"{local}@{DOMAIN}/{resource}" if resource else f"{local}@{DOMAIN}", **kw)
        clients.append(c)
        return await c.login(srv.ports["xmpps" if direct else "xmpp"])

    srv.connect = connect  # type: ignore[attr-defined]
    await srv.start()
    try:
        yield srv
    finally:
        for c in clients:
            await c.close()
        await srv.stop()


@pytest.mark.parametrize("mechanism,direct", [
    ("SCRAM-SHA-256", False), ("SCRAM-SHA-1", False), ("PLAIN", False),
    ("SCRAM-SHA-256", True)])
async def test_login_each_mechanism(xmpp: Any, mechanism: str, direct: bool) -> None:
    c = await xmpp.connect("zhang.san/desk", mechanism=mechanism, direct_tls=direct)
    assert c.boundjid.full == f"zhang.san@{DOMAIN}/desk"


async def test_wrong_password_is_refused(xmpp: Any) -> None:
    c = Client(f"li.si@{DOMAIN}", "wrong-password-1")
    xmpp_clients_port = xmpp.ports["xmpp"]
    c.connect("127.0.0.1", xmpp_clients_port)
    await asyncio.wait_for(c.failed.wait(), TIMEOUT)
    assert not c.started.is_set()
    c.disconnect()


async def test_roster_has_unit_group_and_chat_works(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    li = await xmpp.connect("li.si/phone")
    roster = zhang.client_roster
    assert f"li.si@{DOMAIN}" in roster
    item = roster[f"li.si@{DOMAIN}"]
    assert item["subscription"] == "both"
    assert item["groups"] == ["财政局"]
    assert item["name"] == "李四"
    assert f"wang.wu@{DOMAIN}" not in roster  # another unit
    # Presence between colleagues: li.si came online after zhang.san.
    await zhang.presence_from(f"li.si@{DOMAIN}")
    zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="你好", mtype="chat")
    msg = await li.next_message()
    assert msg["body"] == "你好"
    assert msg["from"].full == f"zhang.san@{DOMAIN}/desk"  # the server stamps 'from'


async def test_offline_message_delivered_at_next_login(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    zhang.send_message(mto=f"wang.wu@{DOMAIN}", mbody="明天开会", mtype="chat")
    await asyncio.sleep(0.3)
    wang = await xmpp.connect("wang.wu/laptop")
    msg = await wang.next_message()
    assert msg["body"] == "明天开会"
    assert msg["delay"]["stamp"] is not None


async def test_unknown_user_gets_service_unavailable(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    zhang.send_message(mto=f"nobody@{DOMAIN}", mbody="hello?", mtype="chat")
    err = await zhang.next_message(body=False)
    assert err["type"] == "error"
    assert err["error"]["condition"] == "service-unavailable"


async def test_carbons_between_two_resources(xmpp: Any) -> None:
    desk = await xmpp.connect("zhang.san/desk")
    phone = await xmpp.connect("zhang.san/phone")
    await phone.plugin["xep_0280"].enable()
    li = await xmpp.connect("li.si/pc")
    carbons: asyncio.Queue[Any] = asyncio.Queue()
    phone.add_event_handler("carbon_sent", carbons.put_nowait)
    desk.send_message(mto=f"li.si@{DOMAIN}/pc", mbody="copy me", mtype="chat")
    sent = await asyncio.wait_for(carbons.get(), TIMEOUT)
    assert sent["carbon_sent"]["body"] == "copy me"
    assert (await li.next_message())["body"] == "copy me"


async def test_subscription_between_units(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    wang = await xmpp.connect("wang.wu/laptop")
    zhang.send_presence(pto=f"wang.wu@{DOMAIN}", ptype="subscribe")
    req = await wang.presence_from(f"zhang.san@{DOMAIN}", "subscribe")
    assert req["from"].full == f"zhang.san@{DOMAIN}"  # bare JID (RFC 6121 §3.1.2)
    wang.send_presence(pto=f"zhang.san@{DOMAIN}", ptype="subscribed")
    await zhang.presence_from(f"wang.wu@{DOMAIN}", "subscribed")
    await zhang.presence_from(f"wang.wu@{DOMAIN}", "available")
    await asyncio.sleep(0.2)
    assert zhang.client_roster[f"wang.wu@{DOMAIN}"]["subscription"] == "to"
    assert wang.client_roster[f"zhang.san@{DOMAIN}"]["subscription"] == "from"


async def test_vcard_from_directory_and_avatar(xmpp: Any) -> None:
    li = await xmpp.connect("li.si/pc")
    result = await li.plugin["xep_0054"].get_vcard(f"zhang.san@{DOMAIN}")
    card = result["vcard_temp"]
    assert card["FN"] == "张三"
    assert card["TITLE"] == "科长"
    assert card["ORG"]["ORGNAME"] == "财政局"
    own = li.plugin["xep_0054"].make_vcard()
    own["PHOTO"]["TYPE"] = "image/png"
    own["PHOTO"]["BINVAL"] = b"\x89PNG fake image"
    await li.plugin["xep_0054"].publish_vcard(own)
    again = await li.plugin["xep_0054"].get_vcard(f"li.si@{DOMAIN}", local=False)
    assert again["vcard_temp"]["PHOTO"]["BINVAL"] == b"\x89PNG fake image"
    assert again["vcard_temp"]["FN"] == "李四"  # directory fields are not overwritten


async def test_disco_ping_version_time(xmpp: Any) -> None:
    c = await xmpp.connect("li.si/pc")
    info = await c.plugin["xep_0030"].get_info(jid=DOMAIN)
    features = set(info["disco_info"]["features"])
    for ns in ("urn:xmpp:ping", "urn:xmpp:carbons:2", "urn:xmpp:blocking", "vcard-temp",
               "jabber:iq:version", "urn:xmpp:time", "jabber:iq:last", "msgoffline",
               "http://jabber.org/protocol/disco#info", "jabber:iq:search"):
        assert ns in features
    assert ("server", "im", "cx-gateway", None) in info["disco_info"]["identities"] or any(
        i[0] == "server" and i[1] == "im" for i in info["disco_info"]["identities"])
    await c.plugin["xep_0199"].ping(DOMAIN, timeout=TIMEOUT)
    version = await c.plugin["xep_0092"].get_version(DOMAIN)
    assert version["software_version"]["name"] == "cx-gateway"


async def test_blocking(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    li = await xmpp.connect("li.si/pc")
    await li.plugin["xep_0191"].block(f"zhang.san@{DOMAIN}")
    blocked = await li.plugin["xep_0191"].get_blocked()
    assert f"zhang.san@{DOMAIN}" in {
        str(j) if isinstance(j, slixmpp.JID) else str(j["jid"])
        for j in blocked["blocklist"]["items"]}
    zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="blocked?", mtype="chat")
    err = await zhang.next_message(body=False)
    assert err["type"] == "error"
    with pytest.raises(TimeoutError):
        await li.next_message(timeout=0.5)
    await li.plugin["xep_0191"].unblock(f"zhang.san@{DOMAIN}")
    zhang.send_message(mto=f"li.si@{DOMAIN}", mbody="now?", mtype="chat")
    assert (await li.next_message())["body"] == "now?"


async def test_resource_conflict_new_session_wins(xmpp: Any) -> None:
    first = await xmpp.connect("zhang.san/desk")
    await xmpp.connect("zhang.san/desk")
    await asyncio.sleep(0.3)
    assert "conflict" in first.stream_errors


async def test_disabled_account_loses_its_session(xmpp: Any) -> None:
    c = await xmpp.connect("wang.wu/pc")
    await xmpp.services.directory.disable_user("wang.wu")
    for _ in range(50):
        if "not-authorized" in c.stream_errors:
            break
        await asyncio.sleep(0.1)
    assert "not-authorized" in c.stream_errors
