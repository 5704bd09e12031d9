"""SMTP receive and submission: aiosmtpd listeners, our policy and handler."""
