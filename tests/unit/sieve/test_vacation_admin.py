"""The managed vacation script of `cxgw user vacation` compiles and says what was asked."""

from __future__ import annotations

from mailrelay.sieve import interp
from mailrelay.sieve.admin import vacation_script
from mailrelay.sieve.script import compile_script


def test_quotes_backslashes_and_lines_survive() -> None:
    text = 'Away "till" Monday\\Tuesday.\n在外出差。'
    src = vacation_script(text, 'Re: "out"', 3, "mine")
    assert "# previous: mine" in src
    actions = interp.run(compile_script(src), interp.Message(
        b"From: a@x.example\r\nTo: u@cx.example\r\n\r\nhi\r\n", "a@x.example", "u@cx.example"))
    vac = next(a for a in actions if isinstance(a, interp.Vacation))
    assert vac.reason == text.replace("\n", "\r\n")
    assert (vac.subject, vac.days) == ('Re: "out"', 3)
    assert interp.Keep() in actions  # vacation keeps the message
