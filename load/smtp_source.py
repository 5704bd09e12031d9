"""Import a Postfix `smtp-source` run so its numbers sit next to ours in `compare`.

smtp-source reports little by itself: with `-c` it prints a running counter (`N\\r`, one
per completed DATA) and it logs warnings on stderr; the elapsed time comes from `time`.
Typical cross-check:

    time smtp-source -c -s 20 -m 10000 -l 2048 -f a@x -t b@y 127.0.0.1:2525 \\
        >counter.txt 2>warnings.txt
    cxgw load import-smtp-source --cmd "smtp-source -c -s 20 -m 10000 -l 2048 127.0.0.1:2525" \\
        --elapsed 3.41 --counter counter.txt --warnings warnings.txt --json smtp-source.json
    cxgw load compare smtp-source.json ours.json

`--elapsed` also accepts the text `time` printed (`real 0m3.41s`, `real 3.41`,
`0:03.41elapsed`), or give it in a file with `--time-output`.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from typing import Any

_REAL_BASH = re.compile(r"real\s+(?:(\d+)m)?([\d.]+)s")
_REAL_POSIX = re.compile(r"real\s+([\d.]+)\b")
_REAL_BSD = re.compile(r"([\d.]+)\s+real\b")
_GNU = re.compile(r"(?:(\d+):)?(\d+):([\d.]+)\s*elapsed|\(h:mm:ss or m:ss\):\s*(?:(\d+):)?"
                  r"(\d+):([\d.]+)")
_REPLY = re.compile(r"\b([45])\d\d\b")


def parse_elapsed(text: str) -> float:
    """Seconds from a number or from what `time` printed (bash, POSIX -p, BSD, GNU)."""
    t = text.strip()
    try:
        return float(t)
    except ValueError:
        pass
    if m := _REAL_BASH.search(t):
        return int(m.group(1) or 0) * 60 + float(m.group(2))
    if m := _REAL_POSIX.search(t):
        return float(m.group(1))
    if m := _REAL_BSD.search(t):
        return float(m.group(1))
    if m := _GNU.search(t):
        g = [x for x in m.groups() if x is not None]
        h, mnt, s = ([0] * (3 - len(g)) + g)[-3:]
        return int(h) * 3600 + int(mnt) * 60 + float(s)
    raise ValueError(f"cannot find an elapsed time in {text[:80]!r}")


def parse_counter(text: str) -> int | None:
    """The last (highest) value of the `-c` counter, or None if there is none."""
    nums = [int(tok) for tok in re.split(r"[\r\n]+", text) if tok.strip().isdigit()]
    return max(nums) if nums else None


def parse_command(cmd: str) -> dict[str, Any]:
    """The smtp-source options that matter for comparison: -m -s -l -r -d, and the target."""
    out: dict[str, Any] = {}
    argv = shlex.split(cmd)
    if argv and argv[0].endswith("smtp-source"):
        argv = argv[1:]
    with_value = set("CfFlLmMorRsStTw")  # options that take an argument
    i = 0
    while i < len(argv):
        a = argv[i]
        if a.startswith("-") and len(a) >= 2:
            flag = a[1]
            if flag in with_value:
                val = a[2:] or (argv[i + 1] if i + 1 < len(argv) else "")
                i += 0 if a[2:] else 1
                key = {"m": "count", "s": "sessions", "l": "length", "r": "rcpts_per_message",
                       "f": "from", "t": "to", "S": "subject"}.get(flag)
                if key:
                    out[key] = int(val) if key in ("count", "sessions", "length",
                                                   "rcpts_per_message") else val
            else:
                for ch in a[1:]:
                    if ch == "d":
                        out["reuse"] = True
                    elif ch == "c":
                        out["counter"] = True
        else:
            out["target"] = a
        i += 1
    return out


def classify_warnings(text: str) -> Counter[str]:
    """Count stderr warning lines by class (`smtp-4xx`, `smtp-5xx`, `smtp-source`)."""
    c: Counter[str] = Counter()
    for line in text.splitlines():
        if "warning" not in line and "fatal" not in line:
            continue
        m = _REPLY.search(line.split(":", 2)[-1])
        c[f"smtp-{m.group(1)}xx" if m else "smtp-source"] += 1
    return c


def to_result(*, elapsed: float, count: int | None = None, cmd: str | None = None,
              counter_text: str | None = None, warnings_text: str | None = None,
              target: str | None = None) -> dict[str, Any]:
    """A result dict in the `cxgw load` schema (latencies unknown: None)."""
    params = parse_command(cmd) if cmd else {}
    sent = count if count is not None else params.get("count")
    if sent is None:
        raise ValueError("need --count or a --cmd with -m COUNT")
    rcpts = int(params.get("rcpts_per_message", 1))
    sent_d = sent * rcpts
    done = parse_counter(counter_text) if counter_text else None
    errors = classify_warnings(warnings_text) if warnings_text else Counter()
    if done is None:
        done = max(sent - sum(errors.values()), 0)
    delivered = min(done, sent) * rcpts
    failed = sent_d - delivered
    if failed and not errors:
        errors["unknown"] = failed
    if elapsed <= 0:
        raise ValueError("elapsed must be positive")
    return {
        "schema": 1, "scenario": "smtp-source", "target": target or params.get("target", "?"),
        "run_id": None, "params": {**params, "imported": True},
        "started": None, "ended": None, "elapsed_s": elapsed, "completed": True,
        "sent": sent_d, "delivered": delivered, "failed": failed, "lost": 0,
        "accepted": delivered, "balanced": True, "messages_sent": sent,
        "messages_accepted": min(done, sent), "connections_opened": None, "bytes_sent": None,
        "throughput_per_s": round(delivered / elapsed, 3),
        "latency_ms": {"p50": None, "p90": None, "p99": None, "p999": None, "max": None,
                       "mean": None, "count": 0},
        "curves": {}, "errors": dict(errors), "timeseries": [],
    }
