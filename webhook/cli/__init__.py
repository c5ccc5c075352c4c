"""The `imagestreams` command: server verbs and the oc-style user verbs."""

from webhook.cli.main import main

__all__ = ["main"]
