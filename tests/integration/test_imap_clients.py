"""Real IMAP clients from Debian against the server: mbsync (isync) and offlineimap both
ways, fetchmail.

Each test skips with a reason when its tool is not installed (`.ci/run` installs isync,
fetchmail and offlineimap3).
The tools run as subprocesses while the server runs in this event loop.
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from gateway.tls import ensure_self_signed
from tests.integration.mailutil import PASSWORD, seed_city
from tests.integration.test_imap import MSG, USER, logged_in, smtp_deliver, th

pytestmark = pytest.mark.integration


@pytest.fixture
async def city(server: Any) -> Any:
    await seed_city(server)
    return server


def cert_file(server: Any) -> str:
    cfg = server.services.cfg
    cert, _ = ensure_self_signed(cfg.state_path, cfg.server.host_name, cfg.server.domain)
    return str(cert)


async def run(*argv: str, cwd: Path) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "HOME": str(cwd)})
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode(errors="replace")
    assert proc.returncode == 0, f"{argv[0]} failed ({proc.returncode}):\n{text}"
    return text


async def mailbox_rows(server: Any, name: str) -> list[Any]:
    async with server.services.db.pool.acquire() as conn:
        return await conn.fetch(
            "select mm.uid, mm.flags, m.raw from mailbox_messages mm"
            " join mailboxes b on b.id = mm.mailbox_id join accounts a on a.id = b.account_id"
            " join messages m on m.id = mm.message_id where a.address = $1 and b.name = $2"
            " order by mm.uid", USER, name)


def maildir_files(path: Path) -> list[Path]:
    return sorted(p for sub in ("cur", "new") for p in (path / sub).glob("*") if p.is_file())


@pytest.mark.skipif(shutil.which("mbsync") is None, reason="mbsync (Debian package isync) missing")
async def test_mbsync_syncs_both_ways(city: Any, tmp_path: Path) -> None:
    await smtp_deliver(city)
    await smtp_deliver(city, MSG.replace(b"hello imap", b"second"))
    for _ in range(200):
        if len(await mailbox_rows(city, "INBOX")) == 2:
            break
        await asyncio.sleep(0.05)
    mail = tmp_path / "mail"
    mail.mkdir()
    rc = tmp_path / "mbsyncrc"
    rc.write_text(
        f"IMAPAccount cx\nHost 127.0.0.1\nPort {city.ports['imaps']}\nUser zhang.san\n"
        f'Pass "{PASSWORD}"\nSSLType IMAPS\nCertificateFile {cert_file(city)}\n\n'
        f"IMAPStore cx-remote\nAccount cx\n\n"
        f"MaildirStore local\nPath {mail}/\nInbox {mail}/INBOX\nSubFolders Verbatim\n\n"
        f"Channel cx\nFar :cx-remote:\nNear :local:\nPatterns INBOX Drafts\n"
        f"Create Both\nExpunge Both\nSyncState *\n")
    await run("mbsync", "-c", str(rc), "-a", cwd=tmp_path)
    inbox = maildir_files(mail / "INBOX")
    assert len(inbox) == 2
    assert any(b"Subject: second" in p.read_bytes() for p in inbox)

    # local changes: mark one message seen and flagged, write a draft
    first = inbox[0]
    kept_subject = b"Subject: hello imap" if b"Subject: second" in first.read_bytes() else (
        b"Subject: second")
    first.rename(mail / "INBOX" / "cur" / (first.name.split(":2,")[0] + ":2,FS"))
    draft = mail / "Drafts" / "new" / "1700000000.1.local"
    draft.write_bytes(b"From: zhang.san@cx.example\nSubject: draft from mbsync\n\nbody\n")
    await run("mbsync", "-c", str(rc), "-a", cwd=tmp_path)
    rows = await mailbox_rows(city, "INBOX")
    flagged = [r for r in rows if "\\Flagged" in r["flags"]]
    assert len(flagged) == 1 and "\\Seen" in flagged[0]["flags"]
    drafts = await mailbox_rows(city, "Drafts")
    assert len(drafts) == 1 and b"draft from mbsync" in bytes(drafts[0]["raw"])

    # a server-side expunge (another IMAP client) reaches the maildir: both sides end
    # with exactly the one message left, and it is the other one
    def expunge_flagged() -> None:
        m = logged_in(city)
        m.select("INBOX")
        typ, data = m.uid("SEARCH", "FLAGGED")
        assert typ == "OK" and len(data[0].split()) == 1
        m.uid("STORE", data[0].decode(), "+FLAGS", "(\\Deleted)")
        assert m.expunge()[0] == "OK"
        m.logout()

    await th(expunge_flagged)
    assert len(await mailbox_rows(city, "INBOX")) == 1
    await run("mbsync", "-c", str(rc), "-a", cwd=tmp_path)
    left = maildir_files(mail / "INBOX")
    assert len(left) == 1 and kept_subject in left[0].read_bytes()
    assert len(await mailbox_rows(city, "INBOX")) == 1


@pytest.mark.skipif(shutil.which("fetchmail") is None, reason="fetchmail missing")
async def test_fetchmail_retrieves_over_imaps(city: Any, tmp_path: Path) -> None:
    await smtp_deliver(city)
    for _ in range(200):
        if await mailbox_rows(city, "INBOX"):
            break
        await asyncio.sleep(0.05)
    out = tmp_path / "out.mbox"
    rc = tmp_path / "fetchmailrc"
    rc.write_text(
        f"poll localhost service {city.ports['imaps']} protocol IMAP auth password\n"
        f'  user "zhang.san" password "{PASSWORD}" ssl sslcertfile {cert_file(city)}'
        f" sslcertck keep mda \"/bin/sh -c 'cat >> {out}'\"\n")
    rc.chmod(0o600)
    await run("fetchmail", "-f", str(rc), "--nosyslog", "-v", cwd=tmp_path)
    assert b"Subject: hello imap" in out.read_bytes()
    rows = await mailbox_rows(city, "INBOX")
    assert "\\Seen" in rows[0]["flags"]  # fetched messages are marked seen, kept


@pytest.mark.skipif(shutil.which("offlineimap") is None,
                    reason="offlineimap missing (Debian package offlineimap3)")
async def test_offlineimap_syncs_both_ways(city: Any, tmp_path: Path) -> None:
    await smtp_deliver(city)
    await smtp_deliver(city, MSG.replace(b"hello imap", b"second"))
    for _ in range(200):
        if len(await mailbox_rows(city, "INBOX")) == 2:
            break
        await asyncio.sleep(0.05)
    mail = tmp_path / "mail"
    rc = tmp_path / "offlineimaprc"
    rc.write_text(
        f"[general]\naccounts = cx\nmetadata = {tmp_path / 'meta'}\n\n"
        f"[Account cx]\nlocalrepository = local\nremoterepository = remote\n\n"
        f"[Repository local]\ntype = Maildir\nlocalfolders = {mail}\n\n"
        f"[Repository remote]\ntype = IMAP\nremotehost = localhost\n"
        f"remoteport = {city.ports['imaps']}\nremoteuser = zhang.san\n"
        f"remotepass = {PASSWORD}\nssl = yes\nsslcacertfile = {cert_file(city)}\n"
        f"folderfilter = lambda f: f in ['INBOX', 'Drafts']\n")
    argv = ("offlineimap", "-c", str(rc), "-o", "-u", "basic")
    out = await run(*argv, cwd=tmp_path)
    assert "ERROR" not in out, out
    inbox = maildir_files(mail / "INBOX")
    assert len(inbox) == 2, out
    assert any(b"Subject: second" in p.read_bytes() for p in inbox)

    # local changes: flag and read one message, write a draft; they reach the server
    first = inbox[0]
    first.rename(first.parent.parent / "cur" / (first.name.split(":2,")[0] + ":2,FS"))
    draft = mail / "Drafts" / "new" / "1700000000.1.local"
    draft.parent.mkdir(parents=True, exist_ok=True)
    draft.write_bytes(b"From: zhang.san@cx.example\nSubject: draft from offlineimap\n\nbody\n")
    out = await run(*argv, cwd=tmp_path)
    assert "ERROR" not in out, out
    rows = await mailbox_rows(city, "INBOX")
    flagged = [r for r in rows if "\\Flagged" in r["flags"]]
    assert len(flagged) == 1 and "\\Seen" in flagged[0]["flags"], out
    drafts = await mailbox_rows(city, "Drafts")
    assert len(drafts) == 1 and b"draft from offlineimap" in bytes(drafts[0]["raw"])

    # a message delivered later shows up locally
    await smtp_deliver(city, MSG.replace(b"hello imap", b"third"))
    for _ in range(200):
        if len(await mailbox_rows(city, "INBOX")) == 3:
            break
        await asyncio.sleep(0.05)
    out = await run(*argv, cwd=tmp_path)
    assert "ERROR" not in out, out
    assert any(b"Subject: third" in p.read_bytes() for p in maildir_files(mail / "INBOX"))
