"""Our server and a peer from Debian packages, side by side on loopback, same load, ratios.

    .venv/bin/python benchmarks/peers/run_peers.py [postfix|dovecot|prosody|all] [--repeat 2]

For each peer: install it with apt if missing (Postfix preseeded to "Local only"), configure
it on non-standard loopback ports with its data in a temp dir, start our server (`cxgw
serve` on a fresh state dir, embedded PostgreSQL, `cxgw demo seed --count N`), run the
same `cxgw load` scenario against both, print `cxgw load compare ours.json peer.json`
(ratios peer/ours), and stop everything it started. Results stay in --out (default
/tmp/cxgw-peers). Loopback only; the machine may be shared, so every pair is run
--repeat times and each run is printed.

- postfix: smtp-burst one message per connection, and with --reuse (PIPELINING), to
  Maildir delivery (virtual(8), so no system users are needed), port 2526;
- dovecot: imap-sync over implicit TLS (port 2994) on Maildirs of --messages messages per
  account (ours filled over SMTP with the same count first);
- prosody: xmpp-chat over STARTTLS with PLAIN (port 5322), --pairs pairs.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/
from dovecot_conf import dovecot_config  # noqa: E402
from prosody_conf import prosody_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
PEER_DOMAIN = "peer.example"
PW = "Peer-pass-123!"


def sh(*argv: str, check: bool = True, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, check=check, text=True, capture_output=True, **kw)  # type: ignore[call-overload]


def apt_install(*pkgs: str) -> None:
    missing = [p for p in pkgs if sh("dpkg", "-s", p, check=False).returncode]
    if not missing:
        return
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["debconf-set-selections"], input="postfix postfix/main_mailer_type select "
                   "Local only\npostfix postfix/mailname string localhost\n", text=True, check=True)
    subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-q", "--no-install-recommends", *missing],
                   check=True, env=env)


def self_signed(d: Path, name: str) -> tuple[Path, Path]:
    key, crt = d / "key.pem", d / "cert.pem"
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj",
       f"/CN={name}", "-keyout", str(key), "-out", str(crt))
    return key, crt


# -- our server (the approach of benchmarks/smtp_bench.py, copied) ------------------------------
class Ours:
    def __init__(self, tmp: Path, accounts: int, extra_config: str = "") -> None:
        self.state = tmp / "cxgw"
        self.state.mkdir()
        self.cfg = self.state / "cx.toml"
        listen = "\n".join(f'{k} = "127.0.0.1:0"' for k in
                           ("smtp", "submission", "imaps", "xmpp", "http"))
        # listeners not measured are off: their fixed default ports would collide with
        # another server on the machine and stop this one from starting
        off = "\n".join(f'{k} = ""' for k in ("submissions", "imap", "xmpps", "pop3", "pop3s",
                                               "managesieve", "https"))
        self.cfg.write_text(f'[server]\nstate_dir = "{self.state / "var"}"\nlog_level = '
                            f'"warning"\n[listen]\n{listen}\n{off}\n[relay]\nsmarthost = '
                            '"127.0.0.1:9"\n' + extra_config)
        env = {**os.environ, "CXGW_DATABASE_URL": "", "CXGW_CONFIG": ""}
        self.proc = subprocess.Popen([PY, "-m", "gateway", "--config", str(self.cfg), "serve"],
                                     cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True, env=env)
        self.ports: dict[str, int] = {}
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            m = re.match(r"listening (\S+)\s+\w+://[\d.]+:(\d+)", line)
            if m:
                self.ports[m.group(1)] = int(m.group(2))
            if line.startswith("cxgw ready"):
                break
        else:
            raise SystemExit("our server did not start")
        sh(PY, "-m", "gateway", "--config", str(self.cfg), "demo", "seed", "--count",
           str(accounts), cwd=ROOT, env=env)
        self.creds = self.state / "var" / "demo-passwords.csv"

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def load(out: Path, *argv: str) -> dict:
    sh(PY, "-m", "load", *argv, "--quiet", "--json", str(out), cwd=ROOT, check=False)
    return json.loads(out.read_text())


def compare(a: Path, b: Path) -> None:
    p = subprocess.run([PY, "-m", "load", "compare", str(a), str(b)], cwd=ROOT, text=True,
                       capture_output=True)
    print(p.stdout)


def line(label: str, r: dict) -> str:
    lat = r["latency_ms"]
    return (f"  {label:8} sent {r['sent']:>6} ok {r['delivered']:>6} failed {r['failed']:>4} "
            f"lost {r['lost']:>4}  {r['throughput_per_s']:>9.1f}/s  p50 {lat['p50']} "
            f"p99 {lat['p99']} ms  errors {r['errors']}")


def peer_creds(tmp: Path, n: int) -> Path:
    f = tmp / "peer-creds.csv"
    f.write_text("address,password\n" + "".join(f"user{i}@{PEER_DOMAIN},{PW}\n"
                                                  for i in range(n)))
    return f


# -- Postfix ------------------------------------------------------------------------------------
def postfix(tmp: Path, args: argparse.Namespace, ours: Ours) -> None:
    apt_install("postfix")
    vmail = tmp / "vmail"
    vmail.mkdir()
    shutil.chown(vmail, "mail", "mail")
    n = args.accounts
    (tmp / "vmailbox").write_text("".join(f"user{i}@{PEER_DOMAIN} user{i}/Maildir/\n"
                                          for i in range(n)))
    sh("postmap", str(tmp / "vmailbox"))
    saved = {f: Path("/etc/postfix", f).read_text() for f in ("main.cf", "master.cf")}
    port = 2526
    try:
        for kv in ("inet_interfaces = 127.0.0.1", "inet_protocols = ipv4",
                   "mydestination = localhost", f"virtual_mailbox_domains = {PEER_DOMAIN}",
                   f"virtual_mailbox_base = {vmail}",
                   f"virtual_mailbox_maps = hash:{tmp / 'vmailbox'}",
                   "virtual_uid_maps = static:8", "virtual_gid_maps = static:8",
                   "virtual_destination_concurrency_limit = 50",
                   "default_process_limit = 200", "smtpd_client_connection_rate_limit = 0",
                   "smtpd_client_message_rate_limit = 0", "smtpd_relay_restrictions = "
                   "permit_mynetworks reject_unauth_destination", "mynetworks = 127.0.0.0/8",
                   "smtpd_tls_security_level = none"):
            sh("postconf", "-e", kv)
        master = Path("/etc/postfix/master.cf")
        master.write_text(re.sub(r"^smtp\s+inet.*$", f"127.0.0.1:{port} inet n - y - - smtpd",
                                 master.read_text(), count=1, flags=re.M))
        sh("postfix", "check", check=False)
        # (no maillog_file: postfix refuses paths outside maillog_file_prefixes)
        subprocess.run(["postfix", "start"], check=False, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
        time.sleep(2)
        creds = peer_creds(tmp, n)
        for mode in ([], ["--reuse"]):
            name = "reuse" if mode else "one-per-conn"
            for rep in range(args.repeat):
                print(f"smtp-burst {name} (run {rep + 1}/{args.repeat}), {args.count} x 2k, "
                      f"{args.connections} connections")
                a = tmp / f"smtp-{name}-ours-{rep}.json"
                b = tmp / f"smtp-{name}-postfix-{rep}.json"
                ra = load(a, "smtp-burst", "--target", f"127.0.0.1:{ours.ports['smtp']}",
                          "--count", str(args.count), "--connections", str(args.connections),
                          "--credentials", str(ours.creds), "--from", "load@outside.example",
                          *mode)
                rb = load(b, "smtp-burst", "--target", f"127.0.0.1:{port}", "--count",
                          str(args.count), "--connections", str(args.connections),
                          "--credentials", str(creds), "--from", "load@outside.example", *mode)
                print(line("ours", ra))
                print(line("postfix", rb))
                compare(a, b)
        if shutil.which("smtp-source"):
            print("Postfix smtp-source against both (cross-check), -s 20 -m", args.count)
            for label, p_ in (("ours", ours.ports["smtp"]), ("postfix", port)):
                rcpt = "user0@" + PEER_DOMAIN if label == "postfix" else \
                    ours.creds.read_text().splitlines()[1].split(",")[0]
                t0 = time.monotonic()
                sh("smtp-source", "-s", "20", "-m", str(args.count), "-l", "2048", "-f",
                   "load@outside.example", "-t", rcpt, f"127.0.0.1:{p_}", check=False)
                dt = time.monotonic() - t0
                print(f"  {label:8} {args.count / dt:9.1f} msg/s ({dt:.2f} s)")
    finally:
        sh("postfix", "stop", check=False)
        for f, text in saved.items():
            Path("/etc/postfix", f).write_text(text)


# -- Dovecot ------------------------------------------------------------------------------------
def dovecot(tmp: Path, args: argparse.Namespace, ours: Ours) -> None:
    apt_install("dovecot-imapd")
    d = tmp / "dovecot"
    (d / "run").mkdir(parents=True)
    key, crt = self_signed(d, PEER_DOMAIN)
    n, m = args.imap_accounts, args.messages
    (d / "users").write_text("".join(f"user{i}@{PEER_DOMAIN}:{{PLAIN}}{PW}:8:8::{d}/mail/"
                                     f"user{i}::\n" for i in range(n)))
    msg = (b"From: a@outside.example\r\nTo: x@peer.example\r\nSubject: seeded\r\n"
           b"Message-ID: <%d@seed>\r\n\r\n" + b"x" * 2000 + b"\r\n")
    for i in range(n):
        md = d / "mail" / f"user{i}" / "Maildir"
        for sub in ("cur", "new", "tmp"):
            (md / sub).mkdir(parents=True)
        for j in range(m):
            (md / "cur" / f"{1700000000 + j}.M{j}P1.seed:2,").write_bytes(msg.replace(
                b"%d", str(j).encode()))
    sh("chown", "-R", "mail:mail", str(d / "mail"))
    port = 2994
    conf = d / "dovecot.conf"
    conf.write_text(dovecot_config(d, port, crt, key, auth_plain=True, min_avail=4))

    # it daemonizes: do not let the daemon hold our output pipes
    subprocess.run(["dovecot", "-c", str(conf)], check=True, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL)
    try:
        time.sleep(1.5)
        pcreds = peer_creds(tmp, n)
        # our side: the first n demo accounts, each with m messages
        lines = ours.creds.read_text().splitlines()[1:n + 1]
        ocreds = tmp / "ours-imap-creds.csv"
        ocreds.write_text("address,password\n" + "\n".join(ln.rsplit(",", 1)[0] if
                                                           ln.count(",") >= 2 else ln
                                                           for ln in lines) + "\n")
        load(tmp / "fill.json", "smtp-burst", "--target", f"127.0.0.1:{ours.ports['smtp']}",
             "--count", str(n * m), "--connections", "10", "--reuse", "--credentials",
             str(ocreds), "--from", "a@outside.example", "--size", "2k")
        time.sleep(3)
        for rep in range(args.repeat):
            print(f"imap-sync (run {rep + 1}/{args.repeat}): {args.imap_count} syncs, "
                  f"{args.connections} connections, {n} accounts x {m} messages, TLS")
            a, b = tmp / f"imap-ours-{rep}.json", tmp / f"imap-dovecot-{rep}.json"
            common = ["--tls", "--insecure", "--count", str(args.imap_count),
                      "--connections", str(args.connections)]
            ra = load(a, "imap-sync", "--target", f"127.0.0.1:{ours.ports['imaps']}",
                      "--credentials", str(ocreds), *common)
            rb = load(b, "imap-sync", "--target", f"127.0.0.1:{port}", "--credentials",
                      str(pcreds), *common)
            print(line("ours", ra))
            print(line("dovecot", rb))
            compare(a, b)
    finally:
        sh("doveadm", "-c", str(conf), "stop", check=False)


# -- Prosody ------------------------------------------------------------------------------------
def prosody(tmp: Path, args: argparse.Namespace, ours: Ours) -> None:
    apt_install("prosody")
    d = tmp / "prosody"
    acc = d / "data" / PEER_DOMAIN.replace(".", "%2e") / "accounts"
    acc.mkdir(parents=True)
    key, crt = self_signed(d, PEER_DOMAIN)
    n = 2 * args.pairs
    for i in range(n):
        (acc / f"user{i}.dat").write_text(f'return {{\n\t["password"] = "{PW}";\n}};\n')
    sh("chown", "-R", "prosody:prosody", str(d))
    port = 5322
    conf = d / "prosody.cfg.lua"
    conf.write_text(prosody_config(d, port, PEER_DOMAIN, key, crt, plain_auth_needs_tls=True))
    proc = subprocess.Popen(["prosody", "--config", str(conf)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        time.sleep(2)
        pcreds = peer_creds(tmp, n)
        for rep in range(args.repeat):
            print(f"xmpp-chat (run {rep + 1}/{args.repeat}): {args.pairs} pairs, window 8, "
                  f"{args.chat_count} messages, STARTTLS + PLAIN")
            a, b = tmp / f"chat-ours-{rep}.json", tmp / f"chat-prosody-{rep}.json"
            common = ["--insecure", "--mechanism", "PLAIN", "--count", str(args.chat_count),
                      "--connections", str(args.pairs), "--window", "8"]
            ra = load(a, "xmpp-chat", "--target", f"127.0.0.1:{ours.ports['xmpp']}",
                      "--credentials", str(ours.creds), *common)
            rb = load(b, "xmpp-chat", "--target", f"127.0.0.1:{port}", "--credentials",
                      str(pcreds), "--domain", PEER_DOMAIN, *common)
            print(line("ours", ra))
            print(line("prosody", rb))
            compare(a, b)
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("peer", nargs="?", default="all", choices=["postfix", "dovecot", "prosody",
                                                               "all"])
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--accounts", type=int, default=400, help="demo accounts (ours), peer users")
    ap.add_argument("--count", type=int, default=2000, help="SMTP messages per run")
    ap.add_argument("--connections", type=int, default=20)
    ap.add_argument("--imap-accounts", type=int, default=20)
    ap.add_argument("--messages", type=int, default=50, help="messages per IMAP mailbox")
    ap.add_argument("--imap-count", type=int, default=1000, help="IMAP syncs per run")
    ap.add_argument("--pairs", type=int, default=50)
    ap.add_argument("--chat-count", type=int, default=20000)
    ap.add_argument("--out", default=None, help="keep results here (default: a temp dir)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root (installs and starts system daemons on loopback)")
    tmp = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="cxgw-peers-"))
    tmp.mkdir(parents=True, exist_ok=True)
    os.chmod(tmp, 0o755)
    print(f"results in {tmp}")
    ours = Ours(tmp, args.accounts)
    try:
        peers = ["postfix", "dovecot", "prosody"] if args.peer == "all" else [args.peer]
        for p in peers:
            print(f"== ours vs {p} ==")
            {"postfix": postfix, "dovecot": dovecot, "prosody": prosody}[p](tmp, args, ours)
    finally:
        ours.stop()


if __name__ == "__main__":
    main()
