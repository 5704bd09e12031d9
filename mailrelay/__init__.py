"""Mail relay: SMTP receive/submission, durable queue, local store, remote delivery, IMAP."""
