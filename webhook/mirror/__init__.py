"""Reference policy Local: copying tags into an in-cluster registry."""
