"""HTTP file upload (XEP-0363) end to end: slot over XMPP, PUT and GET over HTTP
(urllib in a thread), wrong secret refused, file too large, quota reached, expiry."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from typing import Any
from xml.etree import ElementTree as ET

import pytest
import slixmpp

from tests.netutil import free_port
from xmpp.features.upload import UploadSettings

from .test_xmpp import DOMAIN, TIMEOUT

pytestmark = pytest.mark.integration


UP = "urn:xmpp:http:upload:0"
SERVICE = f"upload.{DOMAIN}"



@pytest.fixture
def cfg_overrides() -> dict[str, dict[str, object]]:
    # The slot URLs name the http listener, so it needs a known port here.
    return {"auth": {"scram_iterations": 4096},
            "listen": {"http": f"127.0.0.1:{free_port()}", "https": ""}}


async def request_slot(c: Any, filename: str, size: int, ctype: str = "text/plain") -> Any:
    iq = c.make_iq_get(ito=SERVICE)
    iq.append(ET.fromstring(f"<request xmlns='{UP}' filename='{filename}' size='{size}' "
                            f"content-type='{ctype}'/>"))
    return await iq.send(timeout=TIMEOUT)


def http(method: str, url: str, body: bytes | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    req = urllib.request.Request(url, data=body, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT) as resp:
            return resp.status, resp.read(), dict(resp.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), dict(exc.headers)


async def test_upload_then_download(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    items = await zhang.plugin["xep_0030"].get_items(jid=DOMAIN)  # clients find it here
    assert SERVICE in [i[0] for i in items["disco_items"]["items"]]
    own = await zhang.plugin["xep_0030"].get_info(jid=f"zhang.san@{DOMAIN}")
    assert ("pubsub", "pep") in [(i[0], i[1]) for i in own["disco_info"]["identities"]]
    info = await zhang.plugin["xep_0030"].get_info(jid=SERVICE)
    assert UP in info["disco_info"]["features"]
    assert ("store", "file") in [(i[0], i[1]) for i in info["disco_info"]["identities"]]
    body = "会议纪要 minutes\n".encode() * 10
    slot = await request_slot(zhang, "纪要.txt", len(body), "text/plain; charset=utf-8")
    put = slot.xml.find(f"{{{UP}}}slot/{{{UP}}}put")
    get_url = slot.xml.find(f"{{{UP}}}slot/{{{UP}}}get").get("url")
    auth = put.find(f"{{{UP}}}header").text
    status, _, _ = await asyncio.to_thread(http, "PUT", put.get("url"), body,
                                           {"Content-Type": "text/plain"})
    assert status == 403  # no Authorization header: refused
    status, _, _ = await asyncio.to_thread(http, "PUT", put.get("url"), body,
                                           {"Authorization": auth})
    assert status == 201
    status, got, headers = await asyncio.to_thread(http, "GET", get_url)
    assert status == 200 and got == body
    assert headers["Content-Type"].startswith("text/plain")
    assert headers["X-Content-Type-Options"] == "nosniff"
    # A second PUT on the same slot is refused.
    status, _, _ = await asyncio.to_thread(http, "PUT", put.get("url"), body,
                                           {"Authorization": auth})
    assert status == 403
    # Expired files disappear at the next sweep.
    from datetime import UTC, datetime, timedelta
    later = datetime.now(UTC) + timedelta(days=365)
    assert await xmpp.services.bus.fire("upload/sweep", later) >= 1
    status, _, _ = await asyncio.to_thread(http, "GET", get_url)
    assert status == 404


async def test_file_too_large_and_quota(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san/desk")
    limits = UploadSettings(directory=xmpp.services.cfg.state_path)
    with pytest.raises(slixmpp.exceptions.IqError) as too_big:
        await request_slot(zhang, "big.bin", limits.max_file_size + 1)
    assert too_big.value.condition == "not-acceptable"
    assert too_big.value.iq.xml.find(f".//{{{UP}}}file-too-large/{{{UP}}}max-file-size") \
        is not None
    # Open slots count against the quota: fill it, then the next one is refused.
    n = limits.quota // limits.max_file_size
    for i in range(n):
        await request_slot(zhang, f"f{i}.bin", limits.max_file_size)
    with pytest.raises(slixmpp.exceptions.IqError) as quota:
        await request_slot(zhang, "one-more.bin", limits.max_file_size)
    assert quota.value.condition == "resource-constraint"
