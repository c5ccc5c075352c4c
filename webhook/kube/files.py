"""Kubernetes objects from YAML/JSON files: what the webhook serves from `--streams-file`,
`--policies-file`, and what `imagestreams resolve` and `policy check` read."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ijson
import yaml


def load_documents_of_kinds(path: str | Path, kinds: set[str], what: str) -> list[dict[str, Any]]:
    """The objects of `kinds` in a YAML/JSON file or a directory of them (multi-doc, and
    the items of List kinds); `what` names the file in errors."""
    return list(iter_documents_of_kinds(path, kinds, what))


def iter_documents_of_kinds(
    path: str | Path, kinds: set[str], what: str
) -> Iterator[dict[str, Any]]:
    """As load_documents_of_kinds, one object at a time: a JSON List is read item by item
    and a YAML file document by document, so that loading 50,000 streams never holds
    more than one of them as parsed JSON (the index keeps a few hundred bytes of each).
    A missing path fails at once; a file that does not parse fails when it is reached."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} does not exist")
    files = (
        sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml", ".json"))
        if path.is_dir()
        else [path]
    )
    return _objects_in(files, kinds)


def _objects_in(files: list[Path], kinds: set[str]) -> Iterator[dict[str, Any]]:
    for file in files:
        if file.suffix == ".json":
            yield from _json_objects(file, kinds)
        else:
            for doc in _yaml_documents(file):
                yield from _objects_of_kinds(doc, kinds)


def _yaml_documents(file: Path) -> Iterator[Any]:
    try:
        with file.open("rb") as stream:
            yield from yaml.safe_load_all(stream)
    except yaml.YAMLError as err:
        raise ValueError(f"{file}: not valid YAML/JSON: {err}") from err


def _json_objects(file: Path, kinds: set[str]) -> Iterator[dict[str, Any]]:
    """The objects of `kinds` in a JSON file: its one object, or its List's items.

    The top-level kind is read first, in a pass of its own that builds nothing: `kubectl
    get -o json` writes it after the items. ijson's C backend makes either pass cheap
    beside building the objects."""
    try:
        with file.open("rb") as stream:
            kind = next(ijson.items(stream, "kind"), None)
        if not isinstance(kind, str):
            return  # not an object, or one without a kind: as before, nothing of ours
        with file.open("rb") as stream:
            if kind.endswith("List") and kind.removesuffix("List") in {"", *kinds}:
                for item in ijson.items(stream, "items.item", use_float=True):
                    yield from _objects_of_kinds(item, kinds)
            elif kind in kinds:
                yield from _objects_of_kinds(json.load(stream), kinds)
    except (ijson.JSONError, json.JSONDecodeError, UnicodeDecodeError) as err:
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
