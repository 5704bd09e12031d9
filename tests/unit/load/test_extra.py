"""The server installs without the load harness's extra: `cxgw load` then says how to get it."""

from __future__ import annotations

import subprocess
import sys

# Hide one module of the `.[load]` extra, as on a machine that installed only `pip install -e .`.
SCRIPT = """
import sys
sys.modules['hdrh'] = None
sys.modules['hdrh.histogram'] = None
from gateway.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", SCRIPT, *argv], capture_output=True,
                          text=True, timeout=60)


def test_load_without_extra_explains() -> None:
    r = run("load", "smtp-burst", "--count", "1")
    assert r.returncode == 2, r.stderr
    assert "pip install -e '.[load]'" in r.stderr and "hdrh" in r.stderr
    assert "Traceback" not in r.stderr


def test_other_verbs_work_without_extra() -> None:
    r = run("config", "example")
    assert r.returncode == 0, r.stderr
    assert "[server]" in r.stdout
