"""Inbound authentication of mail from outside (port-25 role): SPF (RFC 7208), DKIM
verification (RFC 6376), ARC (RFC 8617), DMARC (RFC 7489), stamped as one
Authentication-Results header (RFC 8601).

`dns` is the one resolver interface (aiodns behind a small TTL cache; tests inject a
zone); `spf` and `dmarc` are async evaluators over it; `dkimverify` runs dkimpy with the
keys fetched beforehand; `results` formats and strips the header; `checker` ties them
together into one verdict for the SMTP handler.
"""
