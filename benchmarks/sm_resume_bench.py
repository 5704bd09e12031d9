"""Stream-management resume latency (XEP-0198; issue 6's benchmark, not a test).

    .venv/bin/python benchmarks/sm_resume_bench.py [--rounds 50] [--pending 20]

Starts `cxgw serve` on a fresh state dir. Each round: a phone logs in (STARTTLS + SCRAM +
bind), enables resumable stream management, drops its TCP connection without closing the
stream; another user sends it `--pending` messages; the phone connects again, logs in and
sends <resume/>. Reported: time from <resume/> sent to <resumed/> received, and to the
last of the pending messages re-delivered (p50/p95/max, ms); and the loss/duplicate count.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import ssl
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from serverproc import cli, start  # noqa: E402

from load.options import Target  # noqa: E402
from load.xmppclient import NS_TLS, XmppClient, _q  # noqa: E402

SM = "urn:xmpp:sm:3"
PASSWORD = "Bench-pass-1234"


def insecure() -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def wait_for_tag(c: XmppClient, tag: str) -> list:
    seen = []
    while True:
        el = await asyncio.wait_for(c.next_element(), 10)
        seen.append(el)
        if el.tag == tag:
            return seen


async def login_no_bind(target: Target, user: str) -> XmppClient:
    """STARTTLS + SASL, stopping where bind (or resume) would come."""
    ctx = insecure()
    reader, writer = await asyncio.open_connection(target.host, target.port, limit=1 << 20)
    c = XmppClient(reader, writer, "cx.example", 10.0)
    await c._open()
    c.send_raw(f"<starttls xmlns='{NS_TLS}'/>")
    await c.next_element()
    await writer.start_tls(ctx, server_hostname="cx.example")
    await c._open()
    await c._auth(user, PASSWORD, None)
    await c._open()
    return c


async def one_round(target: Target, sender: XmppClient, pending: int, n: int) -> tuple[float, float, int]:
    phone = await XmppClient.connect(target, "cx.example", "phone", PASSWORD, ssl_ctx=insecure(),
                                     resource="phone")
    phone.send_raw(f"<presence/><enable xmlns='{SM}' resume='true'/>")
    enabled = (await wait_for_tag(phone, _q("enabled", SM)))[-1]
    previd = enabled.get("id", "")
    phone.abort()  # the TCP connection drops; the stream is not closed
    await asyncio.sleep(0.05)
    ids = [f"r{n}-{i}" for i in range(pending)]
    for mid in ids:
        sender.message("phone@cx.example", "while you were away", mid)
    await asyncio.sleep(0.1)
    again = await login_no_bind(target, "phone")
    t0 = time.perf_counter()
    again.send_raw(f"<resume xmlns='{SM}' h='0' previd='{previd}'/>")
    got = await wait_for_tag(again, _q("resumed", SM))
    t_resumed = time.perf_counter() - t0
    seen: list[str] = [el.get("id", "") for el in got if el.tag == _q("message")]
    while len([i for i in seen if i in ids]) < pending:
        el = await asyncio.wait_for(again.next_element(), 10)
        if el.tag == _q("message"):
            seen.append(el.get("id", ""))
    t_all = time.perf_counter() - t0
    wrong = sum(1 for i in ids if seen.count(i) != 1)
    again.send_raw("<presence type='unavailable'/></stream:stream>")
    again.abort()
    return t_resumed * 1000, t_all * 1000, wrong


async def main_async(args: argparse.Namespace) -> None:
    state = Path(tempfile.mkdtemp(prefix="cxsm"))
    proc, ports = start(state, ("xmpp",))
    try:
        cli(state, "unit", "add", "bench", "--name", "基准")
        for user in ("phone", "sender"):
            cli(state, "user", "add", user, "--unit", "bench", "--name", user,
                "--password-stdin", stdin=PASSWORD + "\n")
        await asyncio.sleep(0.5)
        target = Target("127.0.0.1", ports["xmpp"])
        sender = await XmppClient.connect(target, "cx.example", "sender", PASSWORD,
                                          ssl_ctx=insecure(), resource="desk")
        sender.start_reader(lambda el: None)
        resumed, complete, wrong = [], [], 0
        for n in range(args.rounds):
            r, a, w = await one_round(target, sender, args.pending, n)
            resumed.append(r)
            complete.append(a)
            wrong += w
        for name, vals in (("resume → <resumed/>", resumed),
                           (f"resume → all {args.pending} pending re-delivered", complete)):
            vals.sort()
            print(f"{name:<44} p50 {statistics.median(vals):7.2f} ms  "
                  f"p95 {vals[int(len(vals) * 0.95) - 1]:7.2f} ms  max {vals[-1]:7.2f} ms")
        print(f"messages lost or duplicated over {args.rounds} rounds: {wrong}")
    finally:
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(state, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--pending", type=int, default=20)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
