"""Small stdlib-only kernel shared by every package: errors, events, clocks."""
