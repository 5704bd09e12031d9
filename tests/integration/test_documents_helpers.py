"""Helpers (no tests) for official-document integration tests: a sealed small city, polling."""

from __future__ import annotations

import asyncio
from typing import Any

import aiosmtplib

from tests.integration.mailutil import PASSWORD

CA_PASSPHRASE = "seal-passphrase-for-tests"


async def seal_city(server: Any) -> Any:
    """finance, stats and a township, with clerks, a CA and a seal per unit."""
    d = server.services.directory
    await d.add_unit("finance", "市财政局")
    await d.add_unit("stats", "市统计局")
    await d.add_unit("town-lucheng", "鹿城镇", township=True)
    await d.add_user("zhang.san", "finance", "张三", roles=["clerk"], password=PASSWORD)
    await d.add_user("wang.wu", "stats", "王五", roles=["clerk"], password=PASSWORD)
    await d.add_user("zhao.liu", "stats", "赵六", roles=["clerk"], password=PASSWORD)
    await d.add_user("li.si", "stats", "李四", password=PASSWORD)
    await d.add_user("chen.qi", "town-lucheng", "陈七", roles=["clerk"], password=PASSWORD)
    await server.services.components["mail"].parts.book.reload()
    docs = server.services.components["docs"]
    await docs.certs.init_ca()
    for unit in ("finance", "stats", "town-lucheng"):
        await docs.certs.issue_seal(unit)
    return docs


async def wait_for(predicate: Any, timeout: float = 15.0, every: float = 0.05) -> Any:
    """Poll an async predicate until it returns something truthy (or time runs out)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        value = await predicate()
        if value or asyncio.get_running_loop().time() > deadline:
            return value
        await asyncio.sleep(every)


async def recipient_states(docs: Any, ident: str | int) -> dict[str, dict[str, Any]]:
    st = await docs.status(str(ident))
    return {r["unit"]: r for r in st["recipients"]}


async def wait_states(docs: Any, ident: str | int, want: set[str],
                      timeout: float = 15.0) -> dict[str, dict[str, Any]]:
    async def done() -> dict[str, dict[str, Any]] | None:
        states = await recipient_states(docs, ident)
        return states if states and all(r["state"] in want for r in states.values()) else None
    return await wait_for(done, timeout) or await recipient_states(docs, ident)


async def inject(server: Any, raw: bytes, rcpt: str = "stats.docs@cx.example",
                 sender: str = "finance.docs@cx.example") -> None:
    """Deliver a crafted message by plain SMTP, as another organisation would."""
    await aiosmtplib.send(raw, sender=sender, recipients=[rcpt], hostname="127.0.0.1",
                          port=server.ports["smtp"], start_tls=False)


def cli_runner(db_url: str, tmp_path: Any, monkeypatch: Any, capsys: Any) -> Any:
    """`cxgw ...` in-process (in a thread) against the test database, with the CA passphrase."""
    import io
    import sys

    from gateway.cli.main import main

    monkeypatch.setenv("CXGW_DATABASE_URL", db_url)
    conf = tmp_path / "cx.toml"
    conf.write_text(f'[server]\nstate_dir = "{tmp_path / "cli-state"}"\n')
    monkeypatch.setenv("CXGW_CONFIG", str(conf))
    monkeypatch.setenv("CXGW_CA_PASSPHRASE", CA_PASSPHRASE)

    async def run(*argv: str, stdin: str | None = None) -> tuple[int, str, str]:
        if stdin is not None:
            monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
        code = await asyncio.to_thread(main, list(argv))
        out, err = capsys.readouterr()
        return code, out, err
    return run


def without_trace(msg: bytes) -> bytes:
    """The delivered copy without the leading Received: trace field(s) that the
    submission stage writes (verified copies go through it like all local mail)."""
    while msg.startswith(b"Received:"):
        end = msg.index(b"\r\n")
        while msg[end + 2:end + 3] in (b" ", b"\t"):
            end = msg.index(b"\r\n", end + 2)
        msg = msg[end + 2:]
    return msg
