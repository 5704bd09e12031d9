"""Verbs: dns records — what to publish in DNS for this configuration (no database)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from gateway.cli.common import EXIT_OK, add_json, guarded, load_config


def register(sub: Any) -> None:
    d = sub.add_parser("dns", help="DNS").add_subparsers(dest="sub", metavar="VERB")
    p = d.add_parser("records", help="the records to publish: MX, SPF, DKIM, DMARC, MTA-STS, "
                     "SRV, autoconfig CNAMEs (zone-file lines, or --json)")
    add_json(p)
    p.set_defaults(func=dns_records)


def dns_records(args: argparse.Namespace) -> int:
    def run() -> int:
        from gateway import clientsetup, dnsrecords
        cfg = load_config(args)
        path = cfg.dkim_key_path
        pem = path.read_bytes() if path.is_file() else None
        recs = dnsrecords.records(clientsetup.ClientSettings.from_config(cfg),
                                  dkim_selector=cfg.dkim.selector, dkim_key_pem=pem,
                                  smarthost=cfg.relay.smarthost,
                                  enforce_mta_sts=bool(cfg.tls.cert))
        if getattr(args, "json", False):
            print(json.dumps([r.as_dict() for r in recs], indent=2))
            return EXIT_OK
        print(f"; DNS records for {cfg.server.domain} (cxgw dns records)")
        if pem is None:
            print(f"; no DKIM key at {path}: run `cxgw dkim keygen`, then print these again")
        print(f"; {', '.join(cfg.server.public_names)} need A/AAAA records of this host")
        for r in recs:
            print(f"; {r.purpose}")
            print(r.zone_line())
        return EXIT_OK
    return guarded(run)
