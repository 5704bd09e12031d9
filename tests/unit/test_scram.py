"""SCRAM against the RFC 5802 §5 (SHA-1) and RFC 7677 §3 (SHA-256) test vectors."""

import base64

import pytest

from directory.scram import (
    ScramError,
    ScramServer,
    check_password,
    client_proof,
    derive_keys,
)

RFC5802 = {
    "mech": "SCRAM-SHA-1",
    "salt": "QSXCR+Q6sek8bf92",
    "client_first": "n,,n=user,r=fyko+d2lbbFgONRv9qkxdawL",
    "server_nonce": "3rfcNHYJY1ZVvWVs7j",
    "server_first": "r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096",
    "client_final": "c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,p=v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
    "server_final": "v=rmF9pqV8S7suAoZWja4dJRkFsKQ=",
}
RFC7677 = {
    "mech": "SCRAM-SHA-256",
    "salt": "W22ZaJ0SNY7soEsUEjb6gQ==",
    "client_first": "n,,n=user,r=rOprNGfwEbeRWgbNEkqO",
    "server_nonce": "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0",
    "server_first": "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096",
    "client_final": "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
    "server_final": "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=",
}


@pytest.mark.parametrize("v", [RFC5802, RFC7677], ids=["rfc5802", "rfc7677"])
def test_server_matches_rfc_vectors(v):
    keys = derive_keys(v["mech"], "pencil", base64.b64decode(v["salt"]), 4096)
    server = ScramServer(v["mech"], nonce=v["server_nonce"])
    assert server.client_first(v["client_first"].encode()) == "user"
    assert server.server_first(keys).decode() == v["server_first"]
    assert server.client_final(v["client_final"].encode()).decode() == v["server_final"]


@pytest.mark.parametrize("v", [RFC5802, RFC7677], ids=["rfc5802", "rfc7677"])
def test_client_helper_matches_rfc_vectors(v):
    proof, server_sig = client_proof(
        v["mech"], "pencil", v["client_first"][3:], v["server_first"],
        v["client_final"].rsplit(",p=", 1)[0])
    assert "p=" + proof == v["client_final"].rsplit(",", 1)[1]
    assert "v=" + server_sig == v["server_final"]


@pytest.mark.parametrize("v", [RFC5802, RFC7677], ids=["rfc5802", "rfc7677"])
def test_wrong_proof_is_rejected(v):
    keys = derive_keys(v["mech"], "not-pencil", base64.b64decode(v["salt"]), 4096)
    server = ScramServer(v["mech"], nonce=v["server_nonce"])
    server.client_first(v["client_first"].encode())
    server.server_first(keys)
    with pytest.raises(ScramError) as exc:
        server.client_final(v["client_final"].encode())
    assert exc.value.code == "invalid-proof"


def test_plain_check_uses_stored_keys_only():
    for mech in ("SCRAM-SHA-1", "SCRAM-SHA-256"):
        keys = derive_keys(mech, "张三的密码2024")
        assert check_password(keys, "张三的密码2024")
        assert not check_password(keys, "张三的密码2025")


@pytest.mark.parametrize("bad", [b"p=tls-unique,,n=user,r=abc", b"x,,n=user,r=abc", b"n,,r=abc",
                                 b"n,,n=u=ZZser,r=abc", b"n,,m=ext,n=user,r=abc", b"\xff\xfe"])
def test_malformed_client_first(bad):
    with pytest.raises(ScramError):
        ScramServer("SCRAM-SHA-256").client_first(bad)


def test_nonce_mismatch_and_channel_binding_mismatch():
    keys = derive_keys("SCRAM-SHA-256", "pw", iterations=4096)
    s = ScramServer("SCRAM-SHA-256", nonce="SN")
    s.client_first(b"n,,n=user,r=CN")
    s.server_first(keys)
    with pytest.raises(ScramError):
        s.client_final(b"c=biws,r=OTHER,p=AAAA")
    with pytest.raises(ScramError) as exc:
        s.client_final(b"c=eSws,r=CNSN,p=AAAA")
    assert exc.value.code == "channel-bindings-dont-match"
