"""MAM query latency on a 100,000-message archive (not a test).

    .venv/bin/python benchmarks/mam_bench.py [--rows 100000] [--repeat 50]

Fills one account's archive (embedded PostgreSQL in a temporary state dir) through the
feature's own store, in the one-row schema production writes: half the messages sent by
the account (its `owner` side), half received (its `peer` side), with two partners. Then
times: the first page (oldest 50), the newest page (``<before/>``), a deep page by
before-id (near the start), a filtered page (with=), as p50/p95 in milliseconds. Each is
timed as production runs it (the query handler always asks for the RSM count: exact up to
``COUNT_EXACT`` rows a side, else a full count cached per owner and filter for
``COUNT_TTL`` seconds); the first, cold query of each case (the full count) is printed
apart. Marked as such, the page alone without the count: a path no client request takes.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cxkernel.config import from_dict  # noqa: E402
from xmpp.features import rsm  # noqa: E402
from xmpp.features.mam import COUNT_EXACT, COUNT_TTL, Filters, MamStore  # noqa: E402

OWNER, A, B = "bench@cx.example", "a@cx.example", "b@cx.example"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


async def main_async(args: argparse.Namespace) -> None:
    from gateway.app import open_services
    tmp = Path(tempfile.mkdtemp(prefix="cxmam"))
    services = await open_services(from_dict({"server": {"domain": "cx.example",
                                                         "state_dir": str(tmp / "state")}}))
    try:
        store = MamStore(services.db.pool)
        t0 = time.perf_counter()
        batch = 5000

        def row(i: int) -> tuple[str, str, str, str, str]:
            other = A if i % 3 else B
            text = f"<message type='chat' id='m{i}'><body>message {i}</body></message>"
            if i % 2:  # sent by the account: its owner side
                return (OWNER, f"id{i:07d}", other, text, other)
            return (other, f"id{i:07d}", OWNER, text, OWNER)  # received: its peer side

        for start in range(0, args.rows, batch):
            await store.write([row(i) for i in range(start, min(args.rows, start + batch))])
        async with services.db.pool.acquire() as conn:
            await conn.execute("analyze xmpp_mam")
        print(f"filled {args.rows} rows in {time.perf_counter() - t0:.1f} s "
              f"(count exact up to {COUNT_EXACT} rows a side, else cached {COUNT_TTL:.0f} s)")
        deep = f"id{args.rows // 50:07d}"
        cases = {
            "first page (max 50)": (Filters(), rsm.Request(50)),
            "newest page (<before/>)": (Filters(), rsm.Request(50, before="")),
            f"deep page (before-id {deep})": (Filters(), rsm.Request(50, before=deep)),
            "with= filter, newest page": (Filters(with_=B), rsm.Request(50, before="")),
        }
        for name, (f, req) in cases.items():
            t = time.perf_counter()
            await store.query(OWNER, f, req, count=True)
            cold = (time.perf_counter() - t) * 1000
            print(f"{name + ' (production, cold: full count)':72s} {cold:6.2f} ms")
            for count in (True, False):
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    rows, _, _ = await store.query(OWNER, f, req, count=count)
                    times.append((time.perf_counter() - t) * 1000)
                    assert len(rows) == 50
                label = name + (" (production: + RSM count)" if count
                                else " (page alone, not a production path)")
                print(f"{label:72s} p50 {pct(times, 0.5):6.2f} ms  p95 {pct(times, 0.95):6.2f} ms")
    finally:
        await services.db.close()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=50)
    asyncio.run(main_async(ap.parse_args()))


if __name__ == "__main__":
    main()
