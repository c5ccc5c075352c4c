"""The rules, pure: standard library only, no I/O. Everything else builds on these."""
