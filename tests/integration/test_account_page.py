"""The self-service page /account over https against the running server: sign in (the
form's anti-CSRF cookie is required), see the account and its sessions, change the
password (current password and the directory's rules checked; a POST without the
session's CSRF token or from another origin is refused), which ends the account's
XMPP session and its other web session while this browser stays signed in."""

from __future__ import annotations

import asyncio
import http.cookiejar
import re
import ssl
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import pytest

from .test_xmpp import PASSWORD, TIMEOUT

pytestmark = pytest.mark.integration
NEW = "Neu-Passw0rt!42"


@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    return {"auth": {"scram_iterations": 4096}}


class Browser:
    def __init__(self, base: str) -> None:
        self.base = base
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE  # the self-signed test certificate
        self.jar = http.cookiejar.CookieJar()
        self.opener = urllib.request.build_opener(
            urllib.request.HTTPSHandler(context=ctx),
            urllib.request.HTTPCookieProcessor(self.jar))

    def _go(self, path: str, form: dict[str, str] | None,
            headers: dict[str, str]) -> tuple[int, str]:
        data = urllib.parse.urlencode(form).encode() if form is not None else None
        req = urllib.request.Request(self.base + path, data=data, headers=headers)
        try:
            with self.opener.open(req, timeout=TIMEOUT) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    async def go(self, path: str, form: dict[str, str] | None = None,
                 **headers: str) -> tuple[int, str]:
        return await asyncio.to_thread(self._go, path, form, headers)


def csrf(page: str) -> str:
    m = re.search(r"name='csrf' value='([^']+)'", page)
    assert m, page
    return m.group(1)


async def signed_in(base: str, password: str = PASSWORD) -> tuple[Browser, str]:
    b = Browser(base)
    status, page = await b.go("/account")
    assert status == 200 and "Sign in" in page
    status, page = await b.go("/account/login", {"csrf": csrf(page), "address":
                                                  "zhang.san@cx.example", "password": password})
    assert status == 200 and "Your account" in page, page
    return b, page


async def test_account_page_password_change(xmpp: Any) -> None:
    base = f"https://127.0.0.1:{xmpp.ports['https']}"
    # Plain http is refused; a sign-in without the form's cookie is refused.
    plain = Browser(f"http://127.0.0.1:{xmpp.ports['http']}")
    assert (await plain.go("/account"))[0] == 403
    stranger = Browser(base)
    status, _ = await stranger.go("/account/login", {"csrf": "x", "address":
                                                     "zhang.san@cx.example", "password": PASSWORD})
    assert status == 403
    wrong = Browser(base)
    _, form = await wrong.go("/account")
    status, page = await wrong.go("/account/login", {"csrf": csrf(form), "address":
                                                      "zhang.san@cx.example", "password": "nope"})
    assert status == 403 and "Wrong address or password" in page

    phone = await xmpp.connect("zhang.san/phone")
    other, _ = await signed_in(base)
    me, page = await signed_in(base)
    assert "张三" in page and "finance" in page and "not locked" in page
    assert "XMPP phone" in page and page.count("Web from") == 2
    token = csrf(page)
    # Without the session's token, or from another origin: refused, nothing changed.
    assert (await me.go("/account/password", {"old": PASSWORD, "new": NEW,
                                              "repeat": NEW}))[0] == 403
    assert (await me.go("/account/password", {"csrf": token, "old": PASSWORD, "new": NEW,
                                              "repeat": NEW},
                        Origin="https://evil.example"))[0] == 403
    status, page = await me.go("/account/password", {"csrf": token, "old": "wrong",
                                                     "new": NEW, "repeat": NEW})
    assert status == 403 and "current password is wrong" in page
    status, page = await me.go("/account/password", {"csrf": token, "old": PASSWORD,
                                                     "new": "short", "repeat": "short"})
    assert status == 400
    assert not phone.stream_errors
    status, page = await me.go("/account/password", {"csrf": token, "old": PASSWORD,
                                                     "new": NEW, "repeat": NEW})
    assert status == 200 and "Password changed" in page, page
    for _ in range(int(TIMEOUT / 0.05)):
        if "not-authorized" in phone.stream_errors:
            break
        await asyncio.sleep(0.05)
    assert "not-authorized" in phone.stream_errors  # the XMPP session ended
    status, page = await other.go("/account")  # the other browser is signed out
    assert "Sign in" in page
    status, page = await me.go("/account")  # this one stays
    assert "Your account" in page and page.count("Web from") == 1
    await signed_in(base, NEW)  # the new password works

