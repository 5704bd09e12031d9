"""DKIM: generate a key, sign, verify with a fake DNS; tampering breaks the signature."""

from __future__ import annotations

import asyncio
import email
import email.policy
import re

import pytest

from mailrelay.dkim import DkimError, DkimSigner, generate_key, record_value, verify

MSG = (b"From: Zhang San <zhang.san@cx.example>\r\nTo: li.si@peer.example\r\n"
       b"Subject: =?utf-8?b?5Lya6K6u6YCa55+l?=\r\nDate: Mon, 6 May 2024 07:00:00 +0000\r\n"
       b"Message-ID: <m1@cx.example>\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
       + "会议通知：明天九点开会。\r\n.\r\n..dots\r\n".encode())


@pytest.fixture(scope="module")
def key() -> tuple[bytes, str]:
    return generate_key("s2024", "cx.example", bits=1024)  # small key: fast tests


@pytest.fixture(scope="module")
def dns(key: tuple[bytes, str]) -> dict[str, str]:
    return {"s2024._domainkey.cx.example": record_value(key[1])}


def test_generate_key_record(key: tuple[bytes, str]) -> None:
    pem, record = key
    assert pem.startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    assert record.startswith('s2024._domainkey.cx.example. IN TXT "v=DKIM1; k=rsa; p=')
    strings = re.findall(r'"([^"]*)"', record)
    assert record.endswith('"') and all(len(s) <= 255 for s in strings)


def test_generate_key_2048_splits_strings() -> None:
    _, record = generate_key("sel", "cx.example")
    strings = re.findall(r'"([^"]*)"', record)
    assert len(strings) >= 2 and all(len(s) <= 255 for s in strings)
    assert len(record_value(record)) > 255


def test_sign_verify(key: tuple[bytes, str], dns: dict[str, str]) -> None:
    signer = DkimSigner("cx.example", "s2024", key[0])
    signed = signer.sign(MSG)
    assert signed.startswith(b"DKIM-Signature: ") and signed.endswith(MSG)
    parsed = email.message_from_bytes(signed, policy=email.policy.default)
    sig = " ".join(str(parsed["DKIM-Signature"]).split())
    assert "a=rsa-sha256" in sig and "c=relaxed/relaxed" in sig and "d=cx.example" in sig
    assert "s=s2024" in sig
    h = re.search(r"h=([^;]+)", sig)
    assert h and h.group(1).replace(" ", "").split(":")[:2] == ["from", "from"]
    assert verify(signed, dns.get)
    assert "BEGIN" not in repr(signer)


def test_tampering_fails(key: tuple[bytes, str], dns: dict[str, str]) -> None:
    signed = DkimSigner("cx.example", "s2024", key[0]).sign(MSG)
    assert not verify(signed.replace("九点".encode(), "十点".encode()), dns.get)
    assert not verify(signed.replace(b"li.si@peer", b"xx.yy@peer"), dns.get)
    # Over-signed From: a second From header added after signing breaks the signature.
    extra = signed.replace(b"To: ", b"From: evil@x.example\r\nTo: ", 1)
    assert not verify(extra, dns.get)


def test_relaxed_survives_whitespace_changes(key: tuple[bytes, str],
                                            dns: dict[str, str]) -> None:
    signed = DkimSigner("cx.example", "s2024", key[0]).sign(MSG)
    # relaxed/relaxed (RFC 6376 §3.4.2, §3.4.4): header case/space and trailing WSP change ok
    changed = signed.replace(b"Subject: ", b"subject:   ").replace(b"..dots\r\n", b"..dots  \r\n")
    assert verify(changed, dns.get)


def test_wrong_key_and_missing_record(key: tuple[bytes, str]) -> None:
    signed = DkimSigner("cx.example", "s2024", key[0]).sign(MSG)
    other_pem, other_record = generate_key("s2024", "cx.example", bits=1024)
    assert not verify(signed, {"s2024._domainkey.cx.example": record_value(other_record)}.get)
    assert not verify(signed, lambda name: None)


def test_bare_lf_is_signed_as_crlf(key: tuple[bytes, str], dns: dict[str, str]) -> None:
    signed = DkimSigner("cx.example", "s2024", key[0]).sign(MSG.replace(b"\r\n", b"\n"))
    assert b"\n" not in signed.replace(b"\r\n", b"")
    assert verify(signed, dns.get)


def test_errors(key: tuple[bytes, str]) -> None:
    with pytest.raises(ValueError):
        DkimSigner("cx.example", "s2024", b"not a key")
    with pytest.raises(ValueError):
        DkimSigner("cx.example", "s2024", key[0], headers=("to", "subject"))
    with pytest.raises(ValueError):
        DkimSigner("cx example", "s2024", key[0])
    with pytest.raises(ValueError):
        generate_key("bad selector", "cx.example")
    with pytest.raises(DkimError):
        DkimSigner("cx.example", "s2024", key[0]).sign(b"To: x@y\r\n\r\nno from\r\n")


async def test_sign_async(key: tuple[bytes, str], dns: dict[str, str]) -> None:
    signer = DkimSigner("cx.example", "s2024", key[0])
    results = await asyncio.gather(*(signer.sign_async(MSG) for _ in range(4)))
    assert all(verify(r, dns.get) for r in results)
