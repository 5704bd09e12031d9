"""mbsync (isync) full pull of one INBOX from our server and from Dovecot, side by side.

    .venv/bin/python benchmarks/peers/mbsync_pull.py [--messages 3000] [--repeat 7]

Both servers hold the same --messages distinct ~3 KB messages (ours seeded through SQL as
in benchmarks/imap_bench.py, Dovecot from a Maildir). mbsync reaches both through the same
`openssl s_client` tunnel (implicit TLS; mbsync cannot skip certificate checks), pulls
INBOX into an empty Maildir, and the wall time of each run is printed with the ratio
(ours / Dovecot; below 1 means we are faster), plus the CPU seconds the server spent
(ours: the process and its PostgreSQL; Dovecot: all its processes), which varies less
than wall time on a shared machine. Runs alternate between the two servers; the medians
are the figures to quote.

Like for like: mbsync uses COMPRESS=DEFLATE whenever a server offers it (isync 1.4 has no
switch to refuse it), and we offer it, so Dovecot runs with its imap_zlib plugin and
offers it too; before each series the script checks that mbsync negotiated it with both.
(Debian's stock Dovecot does not load imap_zlib: compared with that, mbsync compresses
against us only and the comparison measures deflate on our side and inflate in mbsync.)
Installs dovecot-imapd with apt if missing; loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from dovecot_conf import dovecot_config  # noqa: E402
from imap_bench import PASSWORD, USER, message, seed  # noqa: E402
from run_peers import apt_install, self_signed, sh  # noqa: E402
from serverproc import cli, start  # noqa: E402

DOVECOT_PORT = 2995


def dovecot(d: Path, n: int) -> Path:
    """A Dovecot on DOVECOT_PORT (implicit TLS) with USER's INBOX of ``n`` messages."""
    (d / "run").mkdir(parents=True)
    key, crt = self_signed(d, "peer.example")
    (d / "users").write_text(f"{USER}:{{PLAIN}}{PASSWORD}:8:8::{d}/mail/u::\n")
    md = d / "mail" / "u" / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    for j in range(n):
        flags = "S" if j % 3 else ""
        (md / "cur" / f"{1700000000 + j}.M{j}P1.seed:2,{flags}").write_bytes(message(j))
    sh("chown", "-R", "mail:mail", str(d / "mail"))
    conf = d / "dovecot.conf"
    conf.write_text(dovecot_config(d, DOVECOT_PORT, crt, key, compress=True))

    subprocess.run(["dovecot", "-c", str(conf)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    return conf


def tree_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and all its descendants."""
    total = 0.0
    try:
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            try:
                t = p.cpu_times()
                total += t.user + t.system + t.children_user + t.children_system
            except psutil.NoSuchProcess:
                pass
    except psutil.NoSuchProcess:
        pass
    return total


def postgres_of(state: Path) -> list[int]:
    """PIDs of the embedded PostgreSQL postmaster(s) serving ``state`` (pgserver detaches
    them from our server process)."""
    out = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = " ".join(p.info["cmdline"] or [])
        if "postgres" in cmd and str(state) in cmd:
            out.append(p.pid)
    return out


def pull(tmp: Path, port: int, label: str, n: int,
         cpu: Callable[[], float] = lambda: 0.0, debug: bool = False) -> tuple[float, float]:
    """One full mbsync pull of INBOX into an empty Maildir: (seconds, server CPU seconds).
    ``debug``: mbsync -Dn (its protocol trace) instead of -q; checks COMPRESS was used."""
    local = tmp / f"local-{label}"
    shutil.rmtree(local, ignore_errors=True)
    local.mkdir()
    rc = tmp / f"mbsyncrc-{label}"
    # FSync no: the local disk of a shared machine must not dominate what we compare
    rc.write_text(f"""FSync no

IMAPAccount acc
Tunnel "openssl s_client -quiet -verify_quiet -connect 127.0.0.1:{port} 2>/dev/null"
User {USER}
Pass {PASSWORD}
AuthMechs LOGIN
PipelineDepth 50

IMAPStore far
Account acc

MaildirStore near
Path {local}/
Inbox {local}/INBOX

Channel ch
Far :far:
Near :near:
Patterns INBOX
Sync Pull
Create Near
SyncState *
""")
    c0 = cpu()
    t0 = time.perf_counter()
    p = subprocess.run(["mbsync", "-Dn" if debug else "-q", "-c", str(rc), "ch"],
                       capture_output=True, text=True)
    dt = time.perf_counter() - t0
    time.sleep(0.2)  # short-lived Dovecot imap processes are counted by their parent
    used = cpu() - c0
    got = len(list((local / "INBOX" / "cur").iterdir())) + len(
        list((local / "INBOX" / "new").iterdir()))
    if p.returncode or got != n:
        raise SystemExit(f"mbsync against {label} failed ({got}/{n}): {p.stderr[-500:]}")
    if debug and "COMPRESS DEFLATE" not in p.stdout + p.stderr:
        raise SystemExit(f"mbsync did not use COMPRESS=DEFLATE with {label}: not like for like")
    return dt, used


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    if not shutil.which("mbsync"):
        raise SystemExit("mbsync (isync) is not installed")
    apt_install("dovecot-imapd")
    tmp = Path(tempfile.mkdtemp(prefix="mbsyncpull"))
    state = tmp / "cxgw"
    state.mkdir()
    proc, ports = start(state, ("smtp", "imaps"), server_toml='domain = "bench.example"\n')
    conf = None
    try:
        cli(state, "unit", "add", "bench", "--name", "Bench")
        cli(state, "user", "add", USER, "--unit", "bench", "--name", "Bench",
            "--password-stdin", stdin=PASSWORD + "\n")
        asyncio.run(seed(f"postgresql://postgres:@/cxgw?host={state / 'var' / 'pg'}",
                         args.messages))
        conf = dovecot(tmp / "dovecot", args.messages)
        time.sleep(1.5)
        master = int((tmp / "dovecot" / "run" / "master.pid").read_text().split()[0])
        pg = postgres_of(state)
        ours: list[tuple[float, float]] = []
        peer: list[tuple[float, float]] = []
        # a first pull each (not counted): checks COMPRESS on both sides, warms caches
        pull(tmp, ports["imaps"], "ours", args.messages, debug=True)
        pull(tmp, DOVECOT_PORT, "dovecot", args.messages, debug=True)
        print("both servers offer COMPRESS=DEFLATE and mbsync uses it with both")
        for rep in range(args.repeat):
            ours.append(pull(tmp, ports["imaps"], "ours", args.messages,
                             lambda: tree_cpu(proc.pid) + sum(map(tree_cpu, pg))))
            peer.append(pull(tmp, DOVECOT_PORT, "dovecot", args.messages,
                             lambda: tree_cpu(master)))
            (o, oc), (d, dc) = ours[-1], peer[-1]
            print(f"run {rep + 1}: ours {o:.2f} s ({oc:.2f} s CPU), dovecot {d:.2f} s "
                  f"({dc:.2f} s CPU), wall ratio {o / d:.2f}")
        mo = statistics.median(x[0] for x in ours)
        mp = statistics.median(x[0] for x in peer)
        co = statistics.median(x[1] for x in ours)
        cp = statistics.median(x[1] for x in peer)
        print(f"median of {args.repeat} ({args.messages} messages): ours {mo:.2f} s "
              f"({co:.2f} s CPU), dovecot {mp:.2f} s ({cp:.2f} s CPU); "
              f"ours/dovecot wall {mo / mp:.2f}, CPU {co / max(cp, 1e-6):.2f}")
    finally:
        if conf is not None:
            sh("doveadm", "-c", str(conf), "stop", check=False)
        proc.terminate()
        proc.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
