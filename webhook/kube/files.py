"""Kubernetes objects from YAML/JSON files: what the webhook serves from `--streams-file`,
`--policies-file`, and what `imagestreams resolve` and `policy check` read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml


def load_documents_of_kinds(path: str | Path, kinds: set[str], what: str) -> list[dict[str, Any]]:
    """The objects of `kinds` in a YAML/JSON file or a directory of them (multi-doc, and
    the items of List kinds); `what` names the file in errors."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        if path.is_dir()
        else [path]
    )
    found: list[dict[str, Any]] = []
    for file in files:
        for doc in _documents(file):
            found.extend(_objects_of_kinds(doc, kinds))
    return found


def _documents(file: Path) -> Iterator[Any]:
    text = file.read_text()
    try:
        if file.suffix == ".json":
            yield json.loads(text)
        else:
            yield from yaml.safe_load_all(text)
    except (yaml.YAMLError, json.JSONDecodeError) as err:
        raise ValueError(f"{file}: not valid YAML/JSON: {err}") from err


def _objects_of_kinds(doc: Any, kinds: set[str]) -> Iterator[dict[str, Any]]:
    if not isinstance(doc, dict):
        return
    kind = str(doc.get("kind", ""))
    items = doc.get("items")
    if kind.endswith("List") and kind.removesuffix("List") in {"", *kinds}:
        for item in items if isinstance(items, list) else []:
            yield from _objects_of_kinds(item, kinds)
    elif kind in kinds:
        yield doc
