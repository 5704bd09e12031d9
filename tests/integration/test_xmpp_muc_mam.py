# ruff: noqa: F811  (fixtures imported from test_xmpp_muc)
"""Room archives (XEP-0313 on MUC): members of a unit room page through its history;
someone outside the unit is refused."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from slixmpp.exceptions import IqError

from tests.integration.mamutil import room_archive as room_query
from tests.integration.test_xmpp_muc import FIN, cfg_overrides, xmpp  # noqa: F401

pytestmark = pytest.mark.integration




async def test_room_archive_for_members_only(xmpp: Any) -> None:
    zhang = await xmpp.connect("zhang.san")
    await zhang.muc.join_muc_wait(FIN, "张三", timeout=10)
    for i in range(3):
        zhang.send_message(mto=FIN, mbody=f"预算会议 {i}", mtype="groupchat")
        await zhang.said()
    zhao = await xmpp.connect("zhao.liu")  # a finance member who was not in the room
    for _ in range(50):
        got = await room_query(zhao, str(FIN))
        if len(got) == 3:
            break
        await asyncio.sleep(0.1)  # archive rows are written in batches
    assert got == ["预算会议 0", "预算会议 1", "预算会议 2"]
    wang = await xmpp.connect("wang.wu")  # another unit
    with pytest.raises(IqError) as refused:
        await room_query(wang, str(FIN))
    assert refused.value.condition == "forbidden"
