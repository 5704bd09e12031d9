"""Common knobs shared by every scenario: target, limits, sizes, TLS, credentials, outputs.

Everything here is pure parsing and validation (no sockets apart from resolving the target
for the loopback safety check), so the CLI and the tests share it.
"""

from __future__ import annotations

import argparse
import csv
import ipaddress
import random
import socket
import ssl
from bisect import bisect_right
from dataclasses import dataclass
from itertools import accumulate
from pathlib import Path

DEFAULT_COUNT = 1000
"""Messages sent when neither --count nor --duration is given."""
HARD_MAX_DURATION = 600.0
"""Every run stops by itself after this many seconds unless --max-duration says otherwise."""
ABSOLUTE_MAX_DURATION = 24 * 3600.0


class OptionError(ValueError):
    """A command-line value that cannot be used; the message is shown to the user."""


@dataclass(frozen=True)
class Target:
    """Where the load goes: host and port, already checked against the loopback rule."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_target(text: str, default_port: int) -> Target:
    """Parse `HOST[:PORT]` (IPv6 as `[::1]:25`)."""
    text = text.strip()
    if not text:
        raise OptionError("empty target")
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    elif text.count(":") == 1:
        host, _, port_text = text.partition(":")
    else:
        host, port_text = text, ""
    if not host:
        raise OptionError(f"bad target {text!r}: no host")
    if port_text:
        if not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise OptionError(f"bad target {text!r}: port must be 1..65535")
        return Target(host, int(port_text))
    return Target(host, default_port)


def is_loopback(host: str) -> bool:
    """True when every address `host` resolves to is a loopback address."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    addrs = {info[4][0] for info in infos}
    return bool(addrs) and all(ipaddress.ip_address(str(a).split("%")[0]).is_loopback
                               for a in addrs)


def check_target_allowed(target: Target, allow_remote: bool) -> None:
    """Refuse non-loopback targets unless the operator said --allow-remote (safety)."""
    if not allow_remote and not is_loopback(target.host):
        raise OptionError(f"refusing non-loopback target {target}: "
                          "pass --allow-remote if you really mean to load a remote server")


def parse_size(text: str) -> int:
    """Parse `512`, `2k`, `20K`, `1m` (k = 1024) into bytes."""
    t = text.strip().lower().removesuffix("b")
    mult = 1
    if t.endswith("k"):
        mult, t = 1024, t[:-1]
    elif t.endswith("m"):
        mult, t = 1024 * 1024, t[:-1]
    try:
        value = float(t) * mult
    except ValueError:
        raise OptionError(f"bad size {text!r}: use e.g. 512, 2k, 1m") from None
    if value < 0 or value > 64 * 1024 * 1024:
        raise OptionError(f"bad size {text!r}: 0..64m")
    return int(value)


class SizeDist:
    """Message sizes: one fixed size or weighted classes (`2k:70,20k:25,500k:5`)."""

    def __init__(self, sizes: list[int], weights: list[float]) -> None:
        if not sizes or len(sizes) != len(weights) or any(w <= 0 for w in weights):
            raise OptionError("size distribution needs positive weights")
        self.sizes = sizes
        self.weights = weights
        self._cum = list(accumulate(weights))

    @classmethod
    def fixed(cls, size: int) -> SizeDist:
        return cls([size], [1.0])

    @classmethod
    def parse(cls, text: str) -> SizeDist:
        sizes: list[int] = []
        weights: list[float] = []
        for part in text.split(","):
            if not part.strip():
                continue
            size_text, sep, weight_text = part.partition(":")
            try:
                weight = float(weight_text) if sep else 1.0
            except ValueError:
                raise OptionError(f"bad weight in {part!r}") from None
            sizes.append(parse_size(size_text))
            weights.append(weight)
        return cls(sizes, weights)

    def pick(self, rng: random.Random) -> int:
        if len(self.sizes) == 1:
            return self.sizes[0]
        return self.sizes[bisect_right(self._cum, rng.random() * self._cum[-1])]

    def describe(self) -> str:
        total = self._cum[-1]
        return ",".join(f"{s}:{w / total * 100:g}" for s, w in zip(self.sizes, self.weights,
                                                                  strict=True))


@dataclass(frozen=True)
class Credential:
    address: str
    password: str
    unit: str | None = None

    def __repr__(self) -> str:  # never print passwords
        return f"Credential({self.address!r}, password=***)"


def load_credentials(path: str | Path) -> list[Credential]:
    """Read `address,password[,unit]` lines (CSV; an optional header line; `#` comments).

    Reads the file `cxgw demo seed` writes (`<state_dir>/demo-passwords.csv`, header
    `address,password,unit`): the header is skipped because its first field has no `@`,
    and the third column, when present, is the account's unit (used by `doc-exchange` and
    `workday`). Extra columns are ignored.
    """
    out: list[Credential] = []
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.reader(line for line in f if not line.lstrip().startswith("#")):
            if len(row) < 2 or "@" not in row[0]:
                continue
            unit = row[2].strip().lower() if len(row) > 2 and row[2].strip() else None
            out.append(Credential(row[0].strip().lower(), row[1].strip(), unit))
    if not out:
        raise OptionError(f"{path}: no `address,password` lines found")
    return out


def load_units(path: str | Path, domain: str | None) -> list[str]:
    """Return `<unit>.docs@<domain>` for every unit in a units file.

    The file is a CSV with a header naming a `code` column (and optionally `domain`), or a
    plain list of unit codes one per line. `--domain` supplies the domain when the file has none.
    """
    text = Path(path).read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
    rows: list[tuple[str, str | None]] = []
    if lines and "code" in [c.strip().lower() for c in next(csv.reader([lines[0]]))]:
        for rec in csv.DictReader(lines):
            rec = {k.strip().lower(): (v or "").strip() for k, v in rec.items() if k}
            if rec.get("code"):
                rows.append((rec["code"].lower(), rec.get("domain") or None))
    else:
        rows = [(ln.split(",")[0].strip().lower(), None) for ln in lines]
    out = []
    for code, dom in rows:
        d = dom or domain
        if not d:
            raise OptionError(f"{path}: unit {code!r} has no domain: pass --domain")
        out.append(f"{code}.docs@{d}")
    if not out:
        raise OptionError(f"{path}: no units found")
    return out


def client_ssl_context(insecure: bool, cafile: str | None) -> ssl.SSLContext:
    """TLS context for the client side; `insecure` skips verification (self-signed test certs)."""
    ctx = ssl.create_default_context(cafile=cafile)
    if insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


def add_common_arguments(p: argparse.ArgumentParser, default_port: int,
                         tls_port: int | None = None) -> None:
    """Add the knobs every scenario understands."""
    g = p.add_argument_group("target and safety")
    g.add_argument("--target", required=True, metavar="HOST[:PORT]",
                   help=f"server to load (default port {default_port}"
                        + (f", {tls_port} with --tls" if tls_port else "") + ")")
    g.add_argument("--allow-remote", action="store_true",
                   help="allow a target that is not a loopback address")
    g = p.add_argument_group("load shape")
    g.add_argument("--connections", "-c", type=int, default=10, metavar="N",
                   help="concurrent connections (default 10)")
    g.add_argument("--count", "-n", type=int, default=None, metavar="M",
                   help=f"total messages (default {DEFAULT_COUNT} unless --duration is given)")
    g.add_argument("--duration", "-d", type=float, default=None, metavar="S",
                   help="stop starting new messages after S seconds")
    g.add_argument("--max-duration", type=float, default=HARD_MAX_DURATION, metavar="S",
                   help=f"hard stop, in-flight work included (default {HARD_MAX_DURATION:g})")
    g.add_argument("--rate", "-r", type=float, default=None, metavar="R",
                   help="open loop: start R messages per second (default: closed loop)")
    g.add_argument("--size", default="2k", metavar="BYTES",
                   help="message size, e.g. 512, 2k, 1m (default 2k)")
    g.add_argument("--size-dist", default=None, metavar="SPEC",
                   help="weighted sizes, e.g. 2k:70,20k:25,500k:5 (overrides --size)")
    g.add_argument("--timeout", type=float, default=30.0, metavar="S",
                   help="per-reply timeout (default 30)")
    g.add_argument("--seed", type=int, default=None, help="random seed (sizes, recipients)")
    g = p.add_argument_group("TLS and credentials")
    tls = g.add_mutually_exclusive_group()
    tls.add_argument("--tls", action="store_true", help="implicit TLS")
    tls.add_argument("--starttls", action="store_true", help="upgrade with STARTTLS")
    g.add_argument("--insecure", action="store_true", help="do not verify the server certificate")
    g.add_argument("--cafile", default=None, help="CA bundle to verify the server certificate")
    g.add_argument("--credentials", default=None, metavar="FILE",
                   help="CSV `address,password` (header allowed); passwords are never printed")
    g = p.add_argument_group("output")
    g.add_argument("--json", default=None, metavar="FILE", help="write the result as JSON")
    g.add_argument("--report", default=None, metavar="FILE.html", help="write an HTML report")
    g.add_argument("--quiet", "-q", action="store_true", help="no live progress, no table")
    p.set_defaults(default_port=default_port, tls_port=tls_port)


@dataclass(frozen=True)
class Limits:
    """How much load: bounded by count and/or duration, always by a hard max duration."""

    count: int | None
    duration: float | None
    max_duration: float
    rate: float | None
    connections: int


def limits_from_args(args: argparse.Namespace) -> Limits:
    count = args.count
    if count is None and args.duration is None:
        count = DEFAULT_COUNT
    if count is not None and count < 1:
        raise OptionError("--count must be at least 1")
    connections = args.connections if args.connections is not None else 1
    if connections < 1:
        raise OptionError("--connections must be at least 1")
    if args.rate is not None and args.rate <= 0:
        raise OptionError("--rate must be positive")
    if args.duration is not None and args.duration <= 0:
        raise OptionError("--duration must be positive")
    max_d = min(float(args.max_duration), ABSOLUTE_MAX_DURATION)
    if max_d <= 0:
        raise OptionError("--max-duration must be positive")
    return Limits(count, args.duration, max_d, args.rate, connections)


def target_from_args(args: argparse.Namespace) -> Target:
    port = args.tls_port if getattr(args, "tls", False) and args.tls_port else args.default_port
    target = parse_target(args.target, port)
    check_target_allowed(target, args.allow_remote)
    return target


def sizes_from_args(args: argparse.Namespace) -> SizeDist:
    if args.size_dist:
        return SizeDist.parse(args.size_dist)
    return SizeDist.fixed(parse_size(args.size))
