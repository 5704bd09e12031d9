"""Configuration of a c2s session core and the stream features it advertises.

Features list only what works (RFC 6120 §4.3.2): STARTTLS, then SASL mechanisms, then
bind. Optional extensions (XEP-0198 ``sm``, XEP-0352 ``csi``, RFC 6121 roster ``ver``) are
advertised only when the caller says a feature module handles them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from xml.etree.ElementTree import Element, SubElement

from directory.sasl import ChannelBinding

from ..jid import nameprep
from . import ns
from .sasl import SUPPORTED, offered


@dataclass(frozen=True)
class FeaturesConfig:
    """Post-authentication stream features provided by feature modules."""

    #: XEP-0198 stream management (its module handles ``urn:xmpp:sm:3`` nonzas).
    sm: bool = False
    #: XEP-0352 client state indication (``urn:xmpp:csi:0`` nonzas).
    csi: bool = False
    #: RFC 6121 §2.6 roster versioning (advertised only; handled by the roster module).
    roster_ver: bool = False
    #: RFC 6121 Appendix E: ``<session><optional/></session>`` for old clients.
    session_optional: bool = True
    #: Further namespaces whose first-level elements are passed on as NonzaReceived.
    extra_nonza_namespaces: frozenset[str] = frozenset()
    #: XEP-0115 §6.3: the server's entity capabilities (node, ver) in stream features.
    caps: tuple[str, str] | None = None

    def nonza_namespaces(self) -> frozenset[str]:
        out = set(self.extra_nonza_namespaces)
        if self.sm:
            out.add(ns.SM)
        if self.csi:
            out.add(ns.CSI)
        return frozenset(out)


@dataclass(frozen=True)
class SessionConfig:
    """Everything a ServerSession needs to know; passed in by the listener.

    `domains` are the served domains (normalised here); the first one names the server in
    a stream error sent before the client said which domain it wants.
    """

    domains: tuple[str, ...]
    #: Port 5223 role: TLS is already on when the session starts (XEP-0368).
    direct_tls: bool = False
    #: A certificate is available, so STARTTLS may be offered.
    tls_available: bool = True
    #: RFC 6120 §5.3.1: TLS is mandatory-to-negotiate before anything else.
    tls_required: bool = True
    mechanisms: tuple[str, ...] = SUPPORTED
    features: FeaturesConfig = field(default_factory=FeaturesConfig)
    #: Stanza size limits (bytes): small before authentication, larger after.
    max_stanza_bytes_unauthenticated: int = 16 * 1024
    max_stanza_bytes: int = 256 * 1024
    max_depth: int = 48
    #: RFC 6120 §6.4.5: a reasonable number of SASL retries, then the stream is closed.
    max_auth_failures: int = 3
    lang: str = "en"
    #: tls-server-end-point of the certificate: SCRAM-*-PLUS is offered on secured streams.
    binding: ChannelBinding | None = None

    def __post_init__(self) -> None:
        if not self.domains:
            raise ValueError("at least one domain is required")
        object.__setattr__(self, "domains", tuple(nameprep(d) for d in self.domains))
        unknown = set(self.mechanisms) - set(SUPPORTED)
        if unknown:
            raise ValueError(f"unsupported SASL mechanisms: {sorted(unknown)}")
        if self.tls_required and not self.tls_available and not self.direct_tls:
            raise ValueError("TLS is required but no certificate is available")


def _mechanisms(parent: Element, names: tuple[str, ...]) -> None:
    if not names:
        return
    mechs = SubElement(parent, ns.SASL_MECHANISMS)
    for name in names:
        SubElement(mechs, ns.q(ns.SASL, "mechanism")).text = name


def _caps(root: Element, feats: FeaturesConfig) -> None:
    if feats.caps is not None:
        node, ver = feats.caps
        SubElement(root, ns.q(ns.CAPS, "c"), {"hash": "sha-1", "node": node, "ver": ver})


def pre_auth_features(config: SessionConfig, secured: bool) -> Element:
    """Features before authentication: STARTTLS and/or SASL mechanisms."""
    root = Element(ns.FEATURES)
    if not secured:
        if config.tls_available:
            tls = SubElement(root, ns.STARTTLS)
            if config.tls_required:
                SubElement(tls, ns.q(ns.TLS, "required"))
        if config.tls_required:
            # RFC 6120 §5.3.1: when TLS is mandatory, nothing else is offered before it.
            return root
    names = offered(config.mechanisms, secured, config.binding)
    _mechanisms(root, names)
    if config.binding is not None and any(n.endswith("-PLUS") for n in names):
        # XEP-0440: say which channel binding -PLUS means here, so clients that would
        # use tls-unique or tls-exporter (which Python's ssl cannot give us) fall back.
        cb = SubElement(root, ns.q("urn:xmpp:sasl-cb:0", "sasl-channel-binding"))
        SubElement(cb, ns.q("urn:xmpp:sasl-cb:0", "channel-binding"),
                   {"type": config.binding.kind})
    _caps(root, config.features)
    return root


def post_auth_features(config: SessionConfig) -> Element:
    """Features after SASL success (RFC 6120 §6.4.6, §7.4): bind and friends."""
    root = Element(ns.FEATURES)
    SubElement(root, ns.BIND_TAG)
    feats = config.features
    if feats.session_optional:
        session = SubElement(root, ns.SESSION_TAG)
        SubElement(session, ns.q(ns.SESSION, "optional"))
    if feats.sm:
        SubElement(root, ns.q(ns.SM, "sm"))
    if feats.csi:
        SubElement(root, ns.q(ns.CSI, "csi"))
    if feats.roster_ver:
        SubElement(root, ns.q(ns.ROSTER_VER, "ver"))
    _caps(root, feats)
    return root
