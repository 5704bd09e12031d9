"""The self-service page ``/account`` (issue 15 item 4), https only: sign in, see your
account (unit, status, lock), your sessions (XMPP resources on this node, web sessions),
change your password.

Security: the session cookie is random (only its SHA-256 is stored, in PostgreSQL, so
every node knows it), ``Secure; HttpOnly; SameSite=Strict``; each POST carries an
anti-CSRF token (per session, or for the sign-in form a double-submitted cookie) and a
cross-origin ``Origin`` is refused. Sign-in goes through the Authenticator (lockout
applies); a password change needs the current password, goes through the directory's
rules and SCRAM keys, and ends the account's other sessions on every protocol.
"""

from __future__ import annotations

import hashlib
import hmac
import html
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cxkernel.errors import CxError
from gateway.http import Request, Response

PATH = "/account"
COOKIE = "cxgw_account"
PRE_COOKIE = "cxgw_account_pre"
SESSION_SECONDS = 8 * 3600
MAX_FORM = 4096
HTML = "text/html; charset=utf-8"
HEADERS = {"Cache-Control": "no-store", "X-Frame-Options": "DENY",
           "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
                                      "form-action 'self'; frame-ancestors 'none'",
           "Referrer-Policy": "no-referrer"}


def _sid(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _cookies(req: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for part in req.headers.get("cookie", "").split(";"):
        name, eq, value = part.strip().partition("=")
        if eq:
            out[name] = value
    return out


def _page(title: str, body: str, status: int = 200,
          headers: dict[str, str] | None = None) -> Response:
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           "</title><style>body{font-family:sans-serif;max-width:40em;margin:2em auto}"
           "label{display:block;margin:.5em 0}</style></head><body>"
           f"<h1>{html.escape(title)}</h1>{body}</body></html>")
    return Response(status, doc.encode(), HTML, {**HEADERS, **(headers or {})})


def _redirect(headers: dict[str, str] | None = None) -> Response:
    return Response(303, b"", HTML, {**HEADERS, "Location": PATH, **(headers or {})})


class AccountPage:
    def __init__(self, services: Any, end_sessions: Any) -> None:
        self.s = services
        self.end_sessions = end_sessions  # (address, keep) -> int, this node's sessions

    async def handle(self, req: Request) -> Response:
        if req.scheme != "https":
            # Passwords and session cookies travel over TLS only.
            return _page("Use HTTPS", "<p>This page is served over https only.</p>", 403)
        origin = req.headers.get("origin")
        if req.method == "POST" and origin and origin != "null" and \
                urlsplit(origin).netloc != req.headers.get("host", ""):
            return _page("Refused", "<p>Cross-origin request refused.</p>", 403)
        if req.method == "POST":
            form = {k: v[0] for k, v in parse_qs(req.body.decode("utf-8", "replace"),
                                                   max_num_fields=10).items()}
            if req.path == f"{PATH}/login":
                return await self._login(req, form)
            session = await self._session(req)
            if session is None or not hmac.compare_digest(form.get("csrf", ""), session[2]):
                return _page("Refused", "<p>Session expired or invalid form; "
                             f"<a href='{PATH}'>sign in again</a>.</p>", 403)
            if req.path == f"{PATH}/password":
                return await self._password(req, session, form)
            if req.path == f"{PATH}/logout":
                await self.s.directory.web_session_end(session[0])
                return _redirect({"Set-Cookie": f"{COOKIE}=; Max-Age=0; Path={PATH}; "
                                  "Secure; HttpOnly; SameSite=Strict"})
            return _page("Not found", "", 404)
        if req.path != PATH:
            return _page("Not found", "", 404)
        session = await self._session(req)
        if session is None:
            return self._login_form()
        return await self._overview(session)

    async def _session(self, req: Request) -> tuple[str, str, str] | None:
        """(session id, address, csrf) of the request's cookie, if it is live."""
        token = _cookies(req).get(COOKIE, "")
        if not token:
            return None
        sid = _sid(token)
        found = await self.s.directory.web_session(sid)
        return (sid, found[0], found[1]) if found else None

    def _login_form(self, message: str = "", status: int = 200) -> Response:
        pre = secrets.token_urlsafe(24)
        note = f"<p><strong>{html.escape(message)}</strong></p>" if message else ""
        body = (f"{note}<form method='post' action='{PATH}/login'>"
                f"<input type='hidden' name='csrf' value='{pre}'>"
                "<label>Address <input name='address' autocomplete='username'></label>"
                "<label>Password <input name='password' type='password' "
                "autocomplete='current-password'></label><button>Sign in</button></form>")
        return _page("Sign in", body, status, {
            "Set-Cookie": f"{PRE_COOKIE}={pre}; Path={PATH}; Secure; HttpOnly; SameSite=Strict"})

    async def _login(self, req: Request, form: dict[str, str]) -> Response:
        pre = _cookies(req).get(PRE_COOKIE, "")
        if not pre or not hmac.compare_digest(form.get("csrf", ""), pre):
            return self._login_form("The form expired; please try again.", 403)
        address, password = form.get("address", "").strip(), form.get("password", "")
        result = await self.s.auth.authenticate(address, password, protocol="web",
                                                remote=req.peer)
        if not result.ok or result.account is None:
            return self._login_form("Wrong address or password, or the account is locked.",
                                    403)
        token = secrets.token_urlsafe(32)
        await self.s.directory.web_session_create(_sid(token), result.account.address,
                                                  secrets.token_urlsafe(24), req.peer,
                                                  SESSION_SECONDS)
        return _redirect({"Set-Cookie": f"{COOKIE}={token}; Max-Age={SESSION_SECONDS}; "
                          f"Path={PATH}; Secure; HttpOnly; SameSite=Strict"})

    async def _overview(self, session: tuple[str, str, str], message: str = "",
                        status: int = 200) -> Response:
        sid, address, csrf = session
        acct = await self.s.directory.get_user(address)
        e = html.escape
        lock = (f"locked until {e(acct.locked_until.isoformat())}" if acct.locked_until
                else "not locked")
        rows = []
        xmpp = self.s.components.get("xmpp")
        if xmpp is not None and getattr(xmpp, "host", None) is not None:
            for r in xmpp.host.router.resources(address):
                rows.append(f"<li>XMPP {e(r.resource)}</li>")
        for w in await self.s.directory.web_sessions(address):
            this = " (this browser)" if w["id"] == sid else ""
            rows.append(f"<li>Web from {e(str(w['remote']))}, since "
                        f"{e(w['created_at'].isoformat(timespec='minutes'))}{this}</li>")
        note = f"<p><strong>{e(message)}</strong></p>" if message else ""
        body = (f"{note}<p>{e(acct.display_name)} &lt;{e(address)}&gt;, unit {e(acct.unit)}"
                f"</p><p>Status: {e(acct.status.value)}, {lock}</p>"
                f"<h2>Sessions</h2><ul>{''.join(rows)}</ul>"
                f"<h2>Change password</h2><form method='post' action='{PATH}/password'>"
                f"<input type='hidden' name='csrf' value='{e(csrf)}'>"
                "<label>Current password <input name='old' type='password' "
                "autocomplete='current-password'></label>"
                "<label>New password <input name='new' type='password' "
                "autocomplete='new-password'></label>"
                "<label>Repeat <input name='repeat' type='password' "
                "autocomplete='new-password'></label><button>Change</button></form>"
                f"<form method='post' action='{PATH}/logout'>"
                f"<input type='hidden' name='csrf' value='{e(csrf)}'>"
                "<button>Sign out</button></form>")
        return _page("Your account", body, status)

    async def _password(self, req: Request, session: tuple[str, str, str],
                        form: dict[str, str]) -> Response:
        sid, address, _ = session
        new = form.get("new", "")
        if new != form.get("repeat", ""):
            return await self._overview(session, "The new passwords differ.", 400)
        check = await self.s.auth.authenticate(address, form.get("old", ""),
                                               protocol="web", remote=req.peer)
        if not check.ok:
            return await self._overview(session, "The current password is wrong.", 403)
        try:
            await self.s.directory.set_password(address, new, keep=f"web:{sid}")
        except CxError as exc:
            return await self._overview(session, getattr(exc, "public", None) or str(exc), 400)
        return await self._overview(session, "Password changed; your other sessions ended.")
