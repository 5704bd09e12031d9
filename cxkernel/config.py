"""Configuration: one TOML file parsed once into typed, frozen objects (mox Static config).

Every section is a frozen dataclass; every field carries its documentation in
``metadata["doc"]``, from which `cxgw config example` prints a complete documented example.
An unknown key or a bad value raises `ConfigError` naming the key and the reason, and
startup stops. Dynamic data (units, accounts, routes, certificates) lives in PostgreSQL.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class ConfigError(Exception):
    """A configuration problem; the message names the key and the reason."""


def _f(default: Any, doc: str, **kw: Any) -> Any:
    if isinstance(default, list):
        items = list(default)
        return field(default_factory=items.copy, metadata={"doc": doc, **kw})
    return field(default=default, metadata={"doc": doc, **kw})


@dataclass(frozen=True)
class ServerConfig:
    domain: str = _f("cx.example", "mail and XMPP domain")
    state_dir: str = _f("var", "database, TLS material, spool (relative to the working directory)")
    hostname: str = _f("", "this host's name in greetings and Received: (empty: mail.<domain>)")
    log_level: str = _f("info", "debug, info, warning or error", choices=("debug", "info", "warning", "error"))
    public_hostnames: list[str] = _f([], "host names clients and DNS records use for this service, first one preferred (empty: [hostname], i.e. mail.<domain>); autoconfig, autodiscover, .mobileconfig, `cxgw dns records` and the self-signed certificate carry them")

    @property
    def host_name(self) -> str:
        return self.hostname or f"mail.{self.domain}"

    @property
    def public_names(self) -> list[str]:
        """The names clients use, the preferred one first (never empty)."""
        return list(self.public_hostnames) or [self.host_name]


@dataclass(frozen=True)
class DatabaseConfig:
    url: str = _f("", "empty: embedded PostgreSQL in state_dir; else postgresql://user:pass@host/db")
    pool_min: int = _f(2, "smallest number of pooled connections", min=1)
    pool_max: int = _f(20, "largest number of pooled connections", min=1)


@dataclass(frozen=True)
class ListenConfig:
    smtp: str = _f("127.0.0.1:2525", "SMTP for mail to our domain (port 25 role); \"\" disables", addr=True)
    submission: str = _f("127.0.0.1:2587", "submission with STARTTLS+AUTH (587 role)", addr=True)
    submissions: str = _f("127.0.0.1:2465", "submission over implicit TLS (465 role)", addr=True)
    imap: str = _f("127.0.0.1:2143", "IMAP with STARTTLS (143 role)", addr=True)
    imaps: str = _f("127.0.0.1:2993", "IMAP over implicit TLS (993 role)", addr=True)
    xmpp: str = _f("127.0.0.1:5222", "XMPP client-to-server with STARTTLS (5222 role)", addr=True)
    xmpps: str = _f("127.0.0.1:5223", "XMPP client-to-server over direct TLS (5223 role, XEP-0368)", addr=True)
    http: str = _f("127.0.0.1:8080", "HTTP: health, metrics, CRL/OCSP, file upload", addr=True)
    https: str = _f("127.0.0.1:8443", "HTTPS (the server certificate): the same routes as `http`; upload links use it when set", addr=True)
    xmpp_component: str = _f("127.0.0.1:5275", "XEP-0114 external components (only when xmpp.components is set)", addr=True)
    pop3: str = _f("127.0.0.1:2110", "POP3 with STLS (110 role; INBOX only, for Foxmail and older clients)", addr=True)
    pop3s: str = _f("127.0.0.1:2995", "POP3 over implicit TLS (995 role)", addr=True)
    managesieve: str = _f("127.0.0.1:4190", "ManageSieve (RFC 5804, STARTTLS) to edit Sieve filters", addr=True)


@dataclass(frozen=True)
class TLSConfig:
    cert: str = _f("", "PEM certificate chain; empty: a self-signed certificate is made in state_dir")
    key: str = _f("", "PEM private key for `cert`")


@dataclass(frozen=True)
class AuthConfig:
    lockout_failures: int = _f(5, "password checks allowed per login name per window; further attempts fail unchecked until the window ends or a login succeeds", min=1)
    lockout_seconds: int = _f(900, "the lockout window, from a name's first attempt (0: no lockout)", min=0)
    scram_iterations: int = _f(4096, "PBKDF2 iteration count for new SCRAM keys (RFC 7677 minimum 4096)", min=4096)
    min_password_length: int = _f(8, "shortest password accepted when set by an admin or import", min=1)
    cache_seconds: int = _f(300, "remember a successful password check this long (0: never); a changed password or a disabled account takes effect at once", min=0)
    penalty_max_seconds: float = _f(15.0, "longest delay before an attempt from a network (IPv4 address, IPv6 /64) with recent failures (0: no penalty)", min=0.0)
    penalty_free_failures: int = _f(3, "failures from a network before its attempts are delayed (then 1, 2, 4... seconds)", min=1)
    penalty_window: int = _f(900, "seconds after its last failure that a network's penalty is forgotten", min=1)


@dataclass(frozen=True)
class SMTPConfig:
    max_message_size: int = _f(50 * 1024 * 1024, "largest message accepted, bytes (552 5.3.4 above)", min=1024)
    max_recipients: int = _f(3000, "most recipients per transaction (452 4.5.3 above)", min=1)
    trusted_networks: list[str] = _f([], "CIDR networks trusted on the port 25 role: they may relay without AUTH, use our domain in MAIL FROM and From:, and post to unit lists. Default: none (fail closed); local tools should use `cxgw mail send` or submission, or add \"127.0.0.1/32\" here", cidr=True)
    open_lists: list[str] = _f([], "unit lists and large aliases that take mail from anyone (\"finance\", \"finance@cx.example\", or \"*\"); the others accept only authenticated local senders or trusted_networks (550 5.7.1)")
    large_alias_members: int = _f(10, "an alias that expands to at least this many mailboxes is treated as a list (see open_lists)", min=2)
    soft_error_limit: int = _f(10, "refused commands in one session after which each further refusal waits error_sleep_time (Postfix smtpd_soft_error_limit)", min=0)
    hard_error_limit: int = _f(20, "refused commands in one session after which it is closed with 421 4.7.0 (Postfix smtpd_hard_error_limit); an accepted message resets the count", min=1)
    error_sleep_time: float = _f(1.0, "seconds each refusal beyond soft_error_limit is delayed (tarpit; Postfix smtpd_error_sleep_time)", min=0.0)
    max_unauth_line: int = _f(4096, "longest command line accepted before AUTH, bytes (500 5.5.2 above; also bounds the AUTH initial response, RFC 4954 §4 allows 12288)", min=512)
    timeout: int = _f(300, "idle timeout per SMTP command, seconds", min=1)
    group_commit_ms: float = _f(2.0, "how long a batch of the submission stage waits for more messages before its COMMIT, milliseconds (0: commit as soon as a commit slot is free)", min=0.0)


@dataclass(frozen=True)
class MailConfig:
    postmaster: str = _f("", "account (or alias) that receives postmaster@<domain> (RFC 5321 §4.5.1); empty: the first unit-admin of the top unit")
    abuse: str = _f("", "account (or alias) that receives abuse@<domain> (RFC 2142); empty: the first unit-admin of the top unit")


@dataclass(frozen=True)
class InboundAuthConfig:
    enabled: bool = _f(True, "check SPF, DKIM, ARC and DMARC of mail from outside on the port-25 role and stamp Authentication-Results")
    authserv_id: str = _f("", "authserv-id of our Authentication-Results header (RFC 8601 §2.5); empty: server.hostname")
    check_loopback: bool = _f(False, "also check mail from 127.0.0.0/8 and ::1 (by default local software -- content filters, re-injection, the load harness -- is not checked)")
    enforce_dmarc: bool = _f(True, "apply the sender domain's DMARC policy: reject (550 5.7.1 at DATA), quarantine (into Junk)")
    dns_servers: list[str] = _f([], "\"host:port\" DNS servers for these lookups (\"[v6]:port\" for IPv6); empty: the system resolver")
    dns_timeout: float = _f(5.0, "seconds per DNS query (a timeout is a temporary error)", min=0.1)
    dns_cache_max: int = _f(10000, "most DNS answers kept in the cache (each for its TTL, at most an hour)", min=0)


@dataclass(frozen=True)
class LimitsConfig:
    """Per listener: concurrent connections (all and per client address: an IPv4 address
    or an IPv6 /64) and the pre-login deadline, counted from connect and not extended by
    traffic. Above a cap the client gets its protocol's refusal (SMTP 421 4.7.0, IMAP
    * BYE, XMPP <policy-violation/>, HTTP 503; on implicit TLS after the handshake).
    HTTP has no login: its request timeouts belong to the HTTP layer."""

    smtp_max_connections: int = _f(1000, "concurrent connections on the port 25 role", min=1)
    smtp_max_per_ip: int = _f(50, "concurrent connections from one address on the port 25 role", min=1)
    smtp_preauth_seconds: float = _f(120.0, "seconds from connect until the first MAIL FROM on the port 25 role", min=0.0)
    submission_max_connections: int = _f(1000, "concurrent connections on submission (587 role)", min=1)
    submission_max_per_ip: int = _f(50, "concurrent connections from one address on submission (587 role)", min=1)
    submission_preauth_seconds: float = _f(60.0, "seconds from connect until AUTH succeeds on submission (587 role)", min=0.0)
    submissions_max_connections: int = _f(1000, "concurrent connections on submission over TLS (465 role)", min=1)
    submissions_max_per_ip: int = _f(50, "concurrent connections from one address on submission over TLS (465 role)", min=1)
    submissions_preauth_seconds: float = _f(60.0, "seconds from connect until AUTH succeeds on submission over TLS (465 role)", min=0.0)
    imap_max_connections: int = _f(5000, "concurrent connections on IMAP with STARTTLS", min=1)
    imap_max_per_ip: int = _f(100, "concurrent connections from one address on IMAP with STARTTLS", min=1)
    imap_preauth_seconds: float = _f(60.0, "seconds from connect until LOGIN/AUTHENTICATE succeeds on IMAP with STARTTLS", min=0.0)
    imaps_max_connections: int = _f(5000, "concurrent connections on IMAP over TLS", min=1)
    imaps_max_per_ip: int = _f(100, "concurrent connections from one address on IMAP over TLS", min=1)
    imaps_preauth_seconds: float = _f(60.0, "seconds from connect until LOGIN/AUTHENTICATE succeeds on IMAP over TLS", min=0.0)
    xmpp_max_connections: int = _f(10000, "concurrent connections on XMPP c2s with STARTTLS", min=1)
    xmpp_max_per_ip: int = _f(100, "concurrent connections from one address on XMPP c2s with STARTTLS", min=1)
    xmpp_preauth_seconds: float = _f(60.0, "seconds from connect until a resource is bound on XMPP c2s with STARTTLS", min=0.0)
    xmpps_max_connections: int = _f(10000, "concurrent connections on XMPP c2s over direct TLS", min=1)
    xmpps_max_per_ip: int = _f(100, "concurrent connections from one address on XMPP c2s over direct TLS", min=1)
    xmpps_preauth_seconds: float = _f(60.0, "seconds from connect until a resource is bound on XMPP c2s over direct TLS", min=0.0)
    xmpp_component_max_connections: int = _f(50, "concurrent connections on XEP-0114 components", min=1)
    xmpp_component_max_per_ip: int = _f(20, "concurrent connections from one address on XEP-0114 components", min=1)
    xmpp_component_preauth_seconds: float = _f(10.0, "seconds from connect until the handshake succeeds on XEP-0114 components", min=0.0)
    http_max_connections: int = _f(1000, "concurrent connections on HTTP", min=1)
    http_max_per_ip: int = _f(50, "concurrent connections from one address on HTTP", min=1)
    pop3_max_connections: int = _f(2000, "concurrent connections on POP3 with STLS (the login deadline is pop3.unauth_timeout)", min=1)
    pop3_max_per_ip: int = _f(100, "concurrent connections from one address on POP3 with STLS", min=1)
    pop3s_max_connections: int = _f(2000, "concurrent connections on POP3 over TLS", min=1)
    pop3s_max_per_ip: int = _f(100, "concurrent connections from one address on POP3 over TLS", min=1)
    managesieve_max_connections: int = _f(500, "concurrent connections on ManageSieve", min=1)
    managesieve_max_per_ip: int = _f(20, "concurrent connections from one address on ManageSieve", min=1)

    def for_listener(self, name: str) -> tuple[int, int, float]:
        """(max_connections, max_per_ip, preauth_seconds) of listener `name`."""
        return (getattr(self, f"{name}_max_connections"), getattr(self, f"{name}_max_per_ip"),
                getattr(self, f"{name}_preauth_seconds", 0.0))


@dataclass(frozen=True)
class RelayConfig:
    smarthost: str = _f("", "\"host:port\" upstream for non-local mail; empty: deliver by MX", addr=True)
    starttls: bool = _f(True, "use STARTTLS to the smarthost when it offers it")
    require_tls: bool = _f(False, "refuse to relay in clear text")
    username: str = _f("", "AUTH user for the smarthost (empty: no AUTH)")
    password: str = _f("", "AUTH password for the smarthost (never logged)", secret=True)
    verify_tls: bool = _f(True, "verify the smarthost's certificate")


@dataclass(frozen=True)
class DKIMConfig:
    selector: str = _f("cx", "DKIM selector (DNS name <selector>._domainkey.<domain>)")
    key_file: str = _f("", "PEM private key; empty: <state_dir>/dkim/<selector>.key if it exists (made by `cxgw dkim keygen`)")
    sign: bool = _f(True, "DKIM-sign outbound mail from our domain when a key exists")


@dataclass(frozen=True)
class QueueConfig:
    retry_initial: int = _f(300, "first retry delay, seconds", min=1)
    retry_max: int = _f(3600, "longest retry delay, seconds (delays double up to this)", min=1)
    max_age: int = _f(5 * 86400, "give up and bounce after this many seconds", min=60)
    delay_warning: int = _f(4 * 3600, "send a delay notice after this many seconds (0: never)", min=0)
    lease_seconds: int = _f(300, "a claimed queue entry is renewed every third of this while its delivery runs; one not renewed for this long (plus node.dead_seconds) goes back to the queue", min=2)
    max_active: int = _f(500, "most deliveries in flight per process", min=1)
    per_destination: int = _f(20, "most concurrent deliveries to one destination", min=1)
    history_days: int = _f(30, "keep per-recipient delivery records (queue show, tracking) this long", min=1)


@dataclass(frozen=True)
class NodeConfig:
    heartbeat_seconds: float = _f(2.0, "how often this process renews its row in the `nodes` table (and reclaims the work of dead nodes)", min=0.1)
    dead_seconds: float = _f(15.0, "a node whose heartbeat is older than this is dead for every other process, on any host: its queue leases are reclaimed", min=1.0)


@dataclass(frozen=True)
class MaintenanceConfig:
    body_gc_seconds: float = _f(60.0, "how often message bodies nothing refers to any more are deleted", min=1.0)
    sweep_seconds: float = _f(3600.0, "how often delivery history and expired uploads (with `.part` leftovers) are cleaned", min=1.0)


@dataclass(frozen=True)
class IMAPConfig:
    idle_timeout: int = _f(1800, "idle timeout, seconds (RFC 3501 §5.4: at least 30 minutes)", min=60)
    max_unauth_bytes: int = _f(8192, "largest command or literal accepted before login", min=1024)
    append_limit: int = _f(50 * 1024 * 1024, "largest APPEND literal after login (APPENDLIMIT)", min=1024)
    max_command_bytes: int = _f(262144, "largest command other than APPEND after login: lines, SEARCH/SORT/THREAD programs (BAD above)", min=8192)
    append_spool_bytes: int = _f(1024 * 1024, "APPEND literals above this size go to a temporary file as they arrive, not to memory", min=4096)
    spool_dir: str = _f("", "directory for spooled APPEND literals (empty: the system temporary directory)")
    max_keywords: int = _f(256, "most keywords a mailbox's keyword list holds (FLAGS names them all); a STORE/APPEND/COPY that would add more gets NO [LIMIT]", min=5)


@dataclass(frozen=True)
class POP3Config:
    idle_timeout: int = _f(600, "idle timeout after login, seconds (RFC 1939 §3: at least 10 minutes)", min=600)
    unauth_timeout: int = _f(60, "seconds from connecting to a successful login, whatever the client sends", min=5)


@dataclass(frozen=True)
class SieveConfig:
    max_scripts: int = _f(20, "most Sieve scripts stored per account (one is active)", min=1)


@dataclass(frozen=True)
class XMPPConfig:
    max_stanza_size: int = _f(262144, "largest stanza, bytes (policy-violation above)", min=10000)
    max_unauth_stanza_size: int = _f(10000, "largest stanza before authentication", min=1000)
    rate_bytes_per_s: int = _f(102400, "per-connection receive rate limit, bytes per second", min=1000)
    directory_groups: str = _f("unit", "roster groups: \"unit\" (own unit) or \"all\" (a group per unit)", choices=("unit", "all"))
    offline_max: int = _f(500, "most offline messages kept per user", min=1)
    upload_max_file_size: int = _f(20 * 1024 * 1024, "largest file for HTTP upload (XEP-0363), bytes", min=1)
    upload_quota: int = _f(500 * 1024 * 1024, "upload bytes per user (files kept plus open slots)", min=0)
    upload_expiry: int = _f(30 * 86400, "seconds an uploaded file is kept", min=60)
    upload_url: str = _f("", "public base URL of upload slots (empty: http://<listen.http>)")
    upload_domain: str = _f("", "upload service JID (empty: upload.<domain>)")
    components: list[str] = _f([], "external components as \"domain=secret\" (XEP-0114)", secret=True)
    component_rate_bytes_per_s: int = _f(1048576, "per-component receive rate limit, bytes per second (reading pauses above)", min=1000)
    component_auth_delay: float = _f(1.0, "seconds a peer address waits before its next component handshake is checked, doubled per failure in a row (at most 60 s)", min=0.0)
    archive_default: str = _f("always", "message archive (XEP-0313) for users who set no preference: always, roster or never", choices=("always", "roster", "never"))
    outage_buffer_bytes: int = _f(16 * 1024 * 1024, "during a database outage, offline messages waiting to be stored are held in memory up to this many bytes in all; beyond it the sender gets a resource-constraint (wait) error", min=0)
    outage_retry_seconds: float = _f(30.0, "how long one offline message is retried through a database outage before its sender gets a resource-constraint (wait) error", min=0.0)
    contact_addresses: list[str] = _f([], "XEP-0157 contact addresses on the server's disco#info, as \"kind=uri\" (kind: abuse, admin, feedback, sales, security, support; e.g. \"abuse=mailto:abuse@cx.example\"); empty: abuse and admin as mailto:postmaster@<domain>")
    sm_resume_timeout: int = _f(300, "seconds a dropped session can be resumed (XEP-0198) before its unacked messages go offline; also how long a dead node's messages placed on a resumable session wait for the client's <resume/> on another node", min=0)


@dataclass(frozen=True)
class HTTPConfig:
    header_timeout: float = _f(10.0, "seconds to receive a request's line and headers (a trickle does not extend it)", min=0.1)
    body_timeout: float = _f(30.0, "seconds without a byte of a request body before the request is cut off (408)", min=0.1)
    idle_timeout: float = _f(60.0, "seconds a keep-alive connection may wait for its next request", min=0.1)
    max_header: int = _f(16384, "largest request line plus headers, bytes (431 above)", min=1024)


@dataclass(frozen=True)
class CAConfig:
    passphrase: str = _f("", "passphrase that encrypts CA and seal keys at rest (or use passphrase_file)", secret=True)
    passphrase_file: str = _f("", "file holding the passphrase")
    key_type: str = _f("rsa2048", "\"rsa2048\" or \"ecdsa-p256\" for new keys", choices=("rsa2048", "ecdsa-p256"))
    public_url: str = _f("", "base URL where CRL and OCSP are reachable (empty: http://<listen.http>)")


@dataclass(frozen=True)
class Config:
    server: ServerConfig = field(default_factory=ServerConfig)
    database: DatabaseConfig = field(default_factory=DatabaseConfig)
    listen: ListenConfig = field(default_factory=ListenConfig)
    tls: TLSConfig = field(default_factory=TLSConfig)
    auth: AuthConfig = field(default_factory=AuthConfig)
    smtp: SMTPConfig = field(default_factory=SMTPConfig)
    mail: MailConfig = field(default_factory=MailConfig)
    inbound_auth: InboundAuthConfig = field(default_factory=InboundAuthConfig)
    relay: RelayConfig = field(default_factory=RelayConfig)
    queue: QueueConfig = field(default_factory=QueueConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    maintenance: MaintenanceConfig = field(default_factory=MaintenanceConfig)
    dkim: DKIMConfig = field(default_factory=DKIMConfig)
    imap: IMAPConfig = field(default_factory=IMAPConfig)
    pop3: POP3Config = field(default_factory=POP3Config)
    sieve: SieveConfig = field(default_factory=SieveConfig)
    xmpp: XMPPConfig = field(default_factory=XMPPConfig)
    http: HTTPConfig = field(default_factory=HTTPConfig)
    ca: CAConfig = field(default_factory=CAConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    source: str = ""  # path of the file this came from, "" for defaults

    @property
    def state_path(self) -> Path:
        return Path(self.server.state_dir).resolve()

    @property
    def dkim_key_path(self) -> Path:
        return Path(self.dkim.key_file) if self.dkim.key_file else (
            self.state_path / "dkim" / f"{self.dkim.selector}.key")

    def listen_addr(self, name: str) -> tuple[str, int] | None:
        value = getattr(self.listen, name)
        return parse_hostport(value) if value else None


SECTION_DOCS = {
    "server": "identity and where state lives",
    "database": "PostgreSQL",
    "listen": "listeners as \"host:port\"; \"\" disables that listener",
    "tls": "server certificate for STARTTLS and implicit TLS",
    "auth": "authentication and lockout, shared by SMTP, IMAP and XMPP",
    "smtp": "SMTP receive and submission limits",
    "mail": "role addresses (postmaster@, abuse@)",
    "inbound_auth": "SPF, DKIM, ARC and DMARC checks of mail from outside (port-25 role)",
    "relay": "delivery of non-local mail",
    "queue": "retry schedule and delivery concurrency",
    "node": "this process among several on one database (heartbeat, dead-node takeover)",
    "maintenance": "storage maintenance: message-body collection, history and upload expiry (runs on every node, whatever listeners are on)",
    "dkim": "DKIM signing of outbound mail",
    "imap": "IMAP server limits",
    "pop3": "POP3 server timeouts",
    "sieve": "Sieve filters and ManageSieve",
    "xmpp": "XMPP server limits",
    "http": "HTTP/HTTPS listener limits (health, metrics, CRL/OCSP, file upload)",
    "ca": "the city CA/RA for unit seals and personal certificates",
    "limits": "connection caps and pre-login deadlines per listener (names as in [listen])",
}


# XEP-0157 §2: the registered address kinds (field var "<kind>-addresses").
CONTACT_KINDS = ("abuse", "admin", "feedback", "sales", "security", "support")


def parse_hostport(value: str) -> tuple[str, int]:
    """Parse ``host:port`` or ``[v6]:port``; raise ValueError on anything else."""
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"expected \"host:port\", got {value!r}")
    return host, int(port)


def _convert(key: str, f: dataclasses.Field[Any], raw: Any) -> Any:
    tp = f.type if not isinstance(f.type, str) else _resolve(f.type)
    meta = f.metadata
    origin = typing.get_origin(tp)
    if tp is bool:
        if not isinstance(raw, bool):
            raise ConfigError(f"{key}: expected true or false, got {raw!r}")
        value: Any = raw
    elif tp is int:
        if isinstance(raw, bool) or not isinstance(raw, int):
            raise ConfigError(f"{key}: expected an integer, got {raw!r}")
        value = raw
    elif tp is float:
        if isinstance(raw, bool) or not isinstance(raw, int | float):
            raise ConfigError(f"{key}: expected a number, got {raw!r}")
        value = float(raw)
    elif tp is str:
        if not isinstance(raw, str):
            raise ConfigError(f"{key}: expected a string, got {raw!r}")
        value = raw
    elif origin is list:
        if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
            raise ConfigError(f"{key}: expected a list of strings, got {raw!r}")
        value = list(raw)
    else:  # pragma: no cover - programming error
        raise ConfigError(f"{key}: unsupported type {tp}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(f"{key}: must be at least {meta['min']}, got {value!r}")
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{key}: must be one of {', '.join(meta['choices'])}, got {value!r}")
    if meta.get("addr") and value:
        try:
            parse_hostport(value)
        except ValueError as exc:
            raise ConfigError(f"{key}: {exc}") from None
    if meta.get("cidr"):
        for item in value:
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ConfigError(f"{key}: {item!r} is not a CIDR network") from None
    return value


def _resolve(name: str) -> Any:
    return {"str": str, "int": int, "float": float, "bool": bool, "list[str]": list[str]}[name]


def _build_section(name: str, cls: type, raw: Any) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"[{name}]: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in raw.items():
        if key not in fields:
            raise ConfigError(f"{name}.{key}: unknown key (known: {', '.join(fields)})")
        kwargs[key] = _convert(f"{name}.{key}", fields[key], value)
    return cls(**kwargs)


def _check(cfg: Config) -> None:
    domain = cfg.server.domain
    if not domain or "." not in domain or any(c.isspace() or c in "@/:" for c in domain):
        raise ConfigError(f"server.domain: {domain!r} is not a domain name")
    if bool(cfg.tls.cert) != bool(cfg.tls.key):
        raise ConfigError("tls.cert / tls.key: give both or neither")
    for key in ("cert", "key"):
        path = getattr(cfg.tls, key)
        if path and not Path(path).is_file():
            raise ConfigError(f"tls.{key}: file {path!r} does not exist")
    if cfg.database.pool_max < cfg.database.pool_min:
        raise ConfigError("database.pool_max: must be at least database.pool_min")
    for item in cfg.xmpp.components:
        domain, sep, secret = item.partition("=")
        if not sep or not domain.strip() or not secret:
            raise ConfigError("xmpp.components: each entry is \"domain=secret\"")
    if cfg.node.dead_seconds < 2 * cfg.node.heartbeat_seconds:
        raise ConfigError("node.dead_seconds: must be at least twice node.heartbeat_seconds")
    if cfg.queue.retry_max < cfg.queue.retry_initial:
        raise ConfigError("queue.retry_max: must be at least queue.retry_initial")
    for name in cfg.server.public_hostnames:
        labels = name.rstrip(".").split(".")
        if not name or any(not lab or len(lab) > 63 or not all(c.isalnum() or c == "-" for c in lab)
                           for lab in labels):
            raise ConfigError(f"server.public_hostnames: {name!r} is not a host name")
    for item in cfg.xmpp.contact_addresses:
        kind, sep, uri = item.partition("=")
        if not sep or kind not in CONTACT_KINDS or ":" not in uri:
            raise ConfigError("xmpp.contact_addresses: each entry is \"kind=uri\" with kind one of "
                              + ", ".join(CONTACT_KINDS))
    if cfg.database.url and not cfg.database.url.startswith(("postgresql://", "postgres://")):
        raise ConfigError("database.url: must start with postgresql://")
    for item in cfg.inbound_auth.dns_servers:
        try:
            parse_hostport(item)
        except ValueError:
            raise ConfigError(f"inbound_auth.dns_servers: {item!r} is not \"host:port\"") from None
    for role in ("postmaster", "abuse"):
        value = getattr(cfg.mail, role)
        if value and (any(c.isspace() for c in value) or value.count("@") > 1):
            raise ConfigError(f"mail.{role}: {value!r} is not an address or local part")


def _compat(data: dict[str, Any]) -> dict[str, Any]:
    """Older keys: smtp.max_connections(_per_ip) set the three SMTP listeners' caps."""
    smtp = data.get("smtp")
    if not isinstance(smtp, dict) or not ({"max_connections", "max_connections_per_ip"}
                                          & smtp.keys()):
        return data
    data = dict(data)
    smtp = dict(smtp)
    limits = dict(data.get("limits") or {})
    for old, new in (("max_connections", "max_connections"),
                     ("max_connections_per_ip", "max_per_ip")):
        if old in smtp:
            value = smtp.pop(old)
            for role in ("smtp", "submission", "submissions"):
                limits.setdefault(f"{role}_{new}", value)
    data["smtp"], data["limits"] = smtp, limits
    return data


def from_dict(data: dict[str, Any], source: str = "") -> Config:
    """Build a Config from parsed TOML, raising ConfigError on any unknown key or bad value."""
    data = _compat(data)
    sections: dict[str, Any] = {}
    section_types = {f.name: f for f in dataclasses.fields(Config) if f.name != "source"}
    for name, raw in data.items():
        if name not in section_types:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(section_types)})")
        cls = section_types[name].default_factory  # type: ignore[misc]
        sections[name] = _build_section(name, cls, raw)  # type: ignore[arg-type]
    cfg = Config(**sections, source=source)
    _check(cfg)
    return cfg


def load(path: str | None = None, env: dict[str, str] | None = None) -> Config:
    """Load the configuration: `path`, else $CXGW_CONFIG, else defaults.

    $CXGW_DATABASE_URL overrides `database.url`.
    """
    env = dict(os.environ) if env is None else env
    path = path or env.get("CXGW_CONFIG") or None
    data: dict[str, Any] = {}
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path!r} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path!r}: {exc}") from None
    url = env.get("CXGW_DATABASE_URL")
    if url:
        data.setdefault("database", {})
        if not isinstance(data["database"], dict):
            raise ConfigError("[database]: expected a table")
        data["database"]["url"] = url
    return from_dict(data, source=path or "")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"') + '"'


def example() -> str:
    """A complete, documented example configuration with every key at its default."""
    out = ["# cx-gateway configuration (TOML). Every key is optional; shown at its default.",
           "# Use with: cxgw serve --config FILE   (or CXGW_CONFIG=FILE)", ""]
    defaults = Config()
    for sf in dataclasses.fields(Config):
        if sf.name == "source":
            continue
        out.append(f"[{sf.name}]  # {SECTION_DOCS.get(sf.name, '')}")
        section = getattr(defaults, sf.name)
        for f in dataclasses.fields(section):
            line = f"{f.name} = {_toml_value(getattr(section, f.name))}"
            out.append(f"{line:<40} # {f.metadata.get('doc', '')}")
        out.append("")
    return "\n".join(out)


__all__ = ["Config", "ConfigError", "load", "from_dict", "example", "parse_hostport", "types"]
