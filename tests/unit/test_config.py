"""Configuration: defaults, unknown keys, bad values, the documented example."""

import tomllib

import pytest

from cxkernel.config import ConfigError, example, from_dict, load


def test_defaults_match_the_contract():
    c = from_dict({})
    assert c.server.domain == "cx.example" and c.server.state_dir == "var"
    assert c.database.url == ""
    assert c.listen.smtp == "127.0.0.1:2525" and c.listen.submission == "127.0.0.1:2587"
    assert c.listen.submissions == "127.0.0.1:2465" and c.listen.imap == "127.0.0.1:2143"
    assert c.listen.imaps == "127.0.0.1:2993" and c.listen.xmpp == "127.0.0.1:5222"
    assert c.listen.xmpps == "127.0.0.1:5223" and c.listen.http == "127.0.0.1:8080"
    assert c.tls.cert == "" and c.tls.key == ""


@pytest.mark.parametrize("data, message", [
    ({"listen": {"smtpp": "x"}}, "listen.smtpp: unknown key"),
    ({"nosuch": {}}, "[nosuch]: unknown section"),
    ({"listen": {"smtp": "localhost"}}, "listen.smtp: expected \"host:port\""),
    ({"listen": {"smtp": 25}}, "listen.smtp: expected a string"),
    ({"smtp": {"max_recipients": "many"}}, "smtp.max_recipients: expected an integer"),
    ({"smtp": {"max_recipients": 0}}, "smtp.max_recipients: must be at least 1"),
    ({"smtp": {"trusted_networks": ["10.0.0.0/33"]}}, "not a CIDR network"),
    ({"server": {"domain": "no dots"}}, "server.domain"),
    ({"tls": {"cert": "/nonexistent.pem"}}, "tls.cert / tls.key: give both or neither"),
    ({"xmpp": {"directory_groups": "some"}}, "xmpp.directory_groups: must be one of"),
    ({"database": {"url": "mysql://x"}}, "database.url: must start with postgresql://"),
])
def test_bad_values_name_the_key(data, message):
    with pytest.raises(ConfigError) as exc:
        from_dict(data)
    assert message in str(exc.value)


def test_example_is_valid_and_complete():
    text = example()
    parsed = tomllib.loads(text)
    assert from_dict(parsed) == from_dict({})
    for section in ("server", "database", "listen", "tls", "auth", "smtp", "relay", "queue"):
        assert f"[{section}]" in text


def test_load_file_env_override_and_errors(tmp_path):
    f = tmp_path / "c.toml"
    f.write_text('[server]\ndomain = "city.example"\n[listen]\nsmtp = ""\n')
    c = load(str(f), env={"CXGW_DATABASE_URL": "postgresql://db/x"})
    assert c.server.domain == "city.example" and c.listen_addr("smtp") is None
    assert c.database.url == "postgresql://db/x"
    assert load(None, env={"CXGW_CONFIG": str(f)}).server.domain == "city.example"
    f.write_text("[server\n")
    with pytest.raises(ConfigError):
        load(str(f), env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load(str(tmp_path / "missing.toml"), env={})


def test_inbound_auth_and_role_keys():
    cfg = from_dict({"mail": {"postmaster": "it.admin"},
                     "inbound_auth": {"dns_servers": ["10.0.0.53:53", "[2001:db8::1]:53"]}})
    assert cfg.mail.postmaster == "it.admin" and cfg.inbound_auth.enabled
    for bad in ({"inbound_auth": {"dns_servers": ["10.0.0.53"]}},
                {"mail": {"abuse": "a b"}}, {"smtp": {"max_unauth_line": 100}}):
        with pytest.raises(ConfigError):
            from_dict(bad)
