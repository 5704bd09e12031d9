"""Errors that carry their reply (maddy `exterrors`, mox `smtpError`).

An error raised deep inside a service carries everything each protocol front-end needs to
answer: the SMTP basic and enhanced code, a public text that never leaks internals, and a
private reason for the log. Front-ends catch once per command and render the reply.
"""

from __future__ import annotations


class CxError(Exception):
    """Base error of cx-gateway services.

    `public` is safe to show to a peer or an operator; `reason` is for logs only.
    `smtp_code`/`smtp_enhanced` let the SMTP front-end answer without guessing;
    `temporary` says whether a retry may succeed.
    """

    smtp_code: int = 451
    smtp_enhanced: str = "4.3.0"
    temporary: bool = True

    def __init__(
        self,
        public: str,
        *,
        reason: str | None = None,
        smtp_code: int | None = None,
        smtp_enhanced: str | None = None,
        temporary: bool | None = None,
    ) -> None:
        super().__init__(public)
        self.public = public
        self.reason = reason or public
        if smtp_code is not None:
            self.smtp_code = smtp_code
        if smtp_enhanced is not None:
            self.smtp_enhanced = smtp_enhanced
        if temporary is not None:
            self.temporary = temporary
        elif smtp_code is not None:
            self.temporary = 400 <= smtp_code < 500

    def smtp_reply(self) -> str:
        """The full SMTP reply line, e.g. ``550 5.1.1 No such user``."""
        return f"{self.smtp_code} {self.smtp_enhanced} {self.public}"


class NotFound(CxError):
    """A named object (unit, account, alias, queue entry) does not exist."""

    smtp_code = 550
    smtp_enhanced = "5.1.1"
    temporary = False


class Conflict(CxError):
    """The change would create a duplicate or break an invariant (e.g. unit has members)."""

    smtp_code = 550
    smtp_enhanced = "5.7.1"
    temporary = False


class Invalid(CxError):
    """Input is malformed: bad address, empty name, weak password, bad value."""

    smtp_code = 501
    smtp_enhanced = "5.5.4"
    temporary = False


class Unavailable(CxError):
    """A dependency (database, upstream) is not reachable; retry later."""

    smtp_code = 451
    smtp_enhanced = "4.3.0"
    temporary = True
