"""Delivery targets: local mailboxes and remote SMTP (smarthost or MX)."""
