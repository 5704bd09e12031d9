"""The web chat: Converse.js (from npm, never vendored) served at ``/chat/``, set up for
our domain, our WebSocket endpoint (RFC 7395) and our conference service.

`install` runs ``npm pack converse.js@<version>`` and unpacks the package's ``dist/`` into
``<state_dir>/web/converse`` (``cxgw web install``). Without it the server runs as usual
and ``/chat/`` says how to install it (503).
"""

from __future__ import annotations

import json
import mimetypes
import os
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

from cxkernel.config import Config
from gateway.http import Request, Response

PATH = "/chat/"
PACKAGE = "converse.js"
DEFAULT_VERSION = "14.0.0"
CHUNK = 65536


def web_dir(cfg: Config) -> Path:
    return cfg.state_path / "web" / "converse"


def install(cfg: Config, version: str = DEFAULT_VERSION, npm: str = "npm") -> Path:
    """Fetch the package with npm and unpack its ``dist/``; returns the directory."""
    if shutil.which(npm) is None:
        raise RuntimeError("npm is not installed (Debian: apt-get install npm)")
    target = web_dir(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        done = subprocess.run([npm, "pack", f"{PACKAGE}@{version}", "--pack-destination", tmp,
                               "--silent"], capture_output=True, text=True, timeout=600,
                              check=False)
        if done.returncode != 0:
            raise RuntimeError(f"npm pack {PACKAGE}@{version} failed: {done.stderr.strip()}")
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if tgz is None:
            raise RuntimeError("npm pack produced no package")
        staging = Path(tmp) / "unpacked"
        with tarfile.open(tgz) as tar:
            members = [m for m in tar.getmembers() if m.name.startswith("package/dist/")]
            tar.extractall(staging, members=members, filter="data")  # no links, no escapes
        dist = staging / "package" / "dist"
        if not (dist / "converse.min.js").is_file():
            raise RuntimeError(f"{PACKAGE}@{version} has no dist/converse.min.js")
        (dist / "VERSION").write_text(version + "\n")
        old = target.with_name("converse.old")
        if target.exists():
            os.replace(target, old)
        os.replace(dist, target)
        shutil.rmtree(old, ignore_errors=True)
    return target


def settings_json(cfg: Config) -> str:
    """Converse.js options (its `initialize` API): our domain only, our WebSocket, the
    conference service for rooms (unit rooms are listed there)."""
    domain = cfg.server.domain
    return json.dumps({
        "authentication": "login", "default_domain": domain, "locked_domain": domain,
        "domain_placeholder": domain, "muc_domain": f"conference.{domain}",
        "discover_connection_methods": False, "allow_registration": False,
        "assets_path": f"{PATH}dist/", "view_mode": "fullscreen", "auto_reconnect": True,
        "roster_groups": True, "show_client_info": False, "theme": "classic",
        "loglevel": "warn",
    })


def _index(cfg: Config) -> bytes:
    # The endpoint follows the page: wss on https, ws on http (host-meta says the same).
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{cfg.server.domain} chat</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="stylesheet" href="{PATH}dist/converse.min.css"></head>
<body class="converse-fullscreen"><script type="module">
import converse from "{PATH}dist/converse.min.js";  // an ES module since Converse 11
const settings = {settings_json(cfg)};
settings.websocket_url = (location.protocol === "https:" ? "wss://" : "ws://")
    + location.host + "/xmpp-websocket";
converse.initialize(settings);
</script></body></html>
""".encode()


class WebChat:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    async def handle(self, req: Request) -> Response:
        root = web_dir(self.cfg)
        if not (root / "converse.min.js").is_file():
            return Response(503, (
                b"<!doctype html><meta charset='utf-8'><title>Web chat</title><p>The web chat "
                b"is not installed on this server. An administrator runs <code>cxgw web "
                b"install</code> (needs npm); any XMPP client works meanwhile.</p>"),
                "text/html; charset=utf-8")
        rel = req.path[len(PATH):]
        if rel in ("", "index.html"):
            return Response(200, _index(self.cfg), "text/html; charset=utf-8",
                            {"Cache-Control": "no-cache"})
        if not rel.startswith("dist/"):
            return Response(404, b"not found\n")
        path = (root / rel[len("dist/"):]).resolve()
        if not path.is_relative_to(root.resolve()) or not path.is_file():
            return Response(404, b"not found\n")
        ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype.endswith("javascript"):
            ctype += "; charset=utf-8"
        return Response(200, content_type=ctype, stream=_file(path),
                        length=path.stat().st_size,
                        headers={"Cache-Control": "public, max-age=86400"})


async def _file(path: Path) -> AsyncIterator[bytes]:
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            yield chunk
