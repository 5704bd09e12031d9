"""Directory: units, accounts, aliases, credentials (SCRAM), certificates and the CA/RA."""
