"""Directory service against a real PostgreSQL: units, accounts, aliases, auth, lockout."""

from __future__ import annotations

import pytest

from cxkernel.errors import Conflict, Invalid, NotFound


async def test_units_and_accounts(services):
    d = services.directory
    await d.add_unit("finance", "市财政局")
    await d.add_unit("town-lucheng", "鹿城镇", township=True)
    with pytest.raises(Conflict):
        await d.add_unit("finance", "again")
    with pytest.raises(NotFound):
        await d.add_unit("sub", "子单位", parent="nope")
    acct = await d.add_user("Zhang.San", "finance", "张三", "科长", ["clerk"], "Str0ng-pass")
    assert acct.address == "zhang.san@cx.example"
    assert acct.display_name == "张三" and acct.unit == "finance"
    assert [r.value for r in acct.roles] == ["clerk"]
    with pytest.raises(Conflict):
        await d.add_user("zhang.san@cx.example", "finance", "张三")
    with pytest.raises(NotFound):
        await d.add_user("li.si", "nope", "李四")
    with pytest.raises(Invalid):
        await d.add_user("li..si", "finance", "李四")
    with pytest.raises(Invalid):
        await d.add_user("li.si", "finance", "   ")
    with pytest.raises(Invalid):
        await d.add_user("li.si", "finance", "李四", password="short")
    with pytest.raises(Conflict):  # unit list address is reserved
        await d.add_user("finance", "finance", "财政")
    with pytest.raises(Conflict):
        await d.remove_unit("finance")
    moved = await d.move_user("zhang.san", "town-lucheng")
    assert moved.unit == "town-lucheng"
    await d.remove_unit("finance")
    assert [u.code for u in await d.list_units()] == ["town-lucheng"]


async def test_resolve_aliases_and_unit_lists(services):
    d = services.directory
    await d.add_unit("stats", "市统计局")
    await d.add_user("wang.wu", "stats", "王五")
    await d.add_user("zhao.liu", "stats", "赵六")
    await d.add_alias("director", "wang.wu")
    await d.add_alias("team", "director")
    await d.add_alias("team", "someone@outside.example")
    r = await d.resolve("team@cx.example")
    assert r.kind == "alias" and r.accounts == ("wang.wu@cx.example",)
    assert r.external == ("someone@outside.example",)
    r = await d.resolve("stats@cx.example")
    assert r.kind == "unit-list" and set(r.accounts) == {"wang.wu@cx.example", "zhao.liu@cx.example"}
    r = await d.resolve("stats.docs@cx.example")
    assert r.kind == "unit-docs" and r.unit == "stats"
    assert await d.resolve("nobody@cx.example") is None
    assert await d.may_send_as("wang.wu@cx.example", "director@cx.example")
    assert not await d.may_send_as("zhao.liu@cx.example", "director@cx.example")
    await d.disable_user("zhao.liu")
    r = await d.resolve("stats@cx.example")
    assert r.accounts == ("wang.wu@cx.example",)
    with pytest.raises(NotFound):
        await d.add_alias("x", "ghost")


async def test_authenticate_and_lockout(services):
    d, auth = services.directory, services.auth
    await d.add_unit("audit", "市审计局")
    await d.add_user("li.si", "audit", "李四", password="C0rrect-horse")
    ok = await auth.authenticate("li.si", "C0rrect-horse", protocol="test")
    assert ok.ok and ok.account.address == "li.si@cx.example"
    assert (await auth.authenticate("LI.SI@cx.example", "C0rrect-horse")).ok
    bad = await auth.authenticate("nobody", "x")
    assert not bad.ok and bad.reason == "bad-credentials"
    for _ in range(3):  # lockout_failures = 3 in the test config
        assert not (await auth.authenticate("li.si", "wrong")).ok
    locked = await auth.authenticate("li.si", "C0rrect-horse")
    assert not locked.ok and locked.reason == "locked"
    await d.enable_user("li.si")  # an admin unlocks at once
    assert (await auth.authenticate("li.si", "C0rrect-horse")).ok
    await d.disable_user("li.si")
    assert (await auth.authenticate("li.si", "C0rrect-horse")).reason == "disabled"


async def test_no_plaintext_password_stored(services):
    d = services.directory
    await d.add_unit("audit", "市审计局")
    await d.add_user("li.si", "audit", "李四", password="Plain-Secret-123")
    async with services.db.pool.acquire() as conn:
        dump = str(await conn.fetch("select * from credentials")) + str(
            await conn.fetch("select * from accounts"))
    assert "Plain-Secret-123" not in dump
    async with services.db.pool.acquire() as conn:
        mechs = sorted(r["mechanism"] for r in await conn.fetch("select mechanism from credentials"))
    assert mechs == ["SCRAM-SHA-1", "SCRAM-SHA-256"]


async def test_auth_cache_honours_password_change_and_disable(services):
    d, auth = services.directory, services.auth
    await d.add_unit("audit", "市审计局")
    await d.add_user("li.si", "audit", "李四", password="C0rrect-horse")
    assert (await auth.authenticate("li.si", "C0rrect-horse")).ok
    assert auth._cache  # remembered
    assert (await auth.authenticate("li.si", "C0rrect-horse")).ok  # from the cache
    await d.set_password("li.si", "N3w-password!")
    assert not (await auth.authenticate("li.si", "C0rrect-horse")).ok  # old one: gone
    assert (await auth.authenticate("li.si", "N3w-password!")).ok
    await d.disable_user("li.si")
    assert (await auth.authenticate("li.si", "N3w-password!")).reason == "disabled"
