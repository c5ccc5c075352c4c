"""Read ImageStream manifests from a directory tree, for corpus-driven tests.

Handles JSON files, YAML files with one or many documents, and list documents
(`kind: List` or `kind: ImageStreamList`, their `items` possibly nested). Documents of
other kinds are skipped. Plain functions, no pytest: import it from a test with

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests/ directory
    import corpus
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

#: The fixture subset kept in the repository (see its README.md).
FIXTURE_CORPUS = Path(__file__).resolve().parent / "fixtures" / "corpus"

#: The full corpus, present only next to a checkout that has ../shared.
SHARED_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "corpus" / "openshift-library"

MANIFEST_SUFFIXES = (".json", ".yaml", ".yml")
LIST_KINDS = frozenset({"List", "ImageStreamList"})
IMAGESTREAM_KIND = "ImageStream"
#: `image.openshift.io/v1`, and the pre-API-groups `v1` that old OpenShift exports still use.
IMAGESTREAM_API_VERSIONS = frozenset({"image.openshift.io/v1", "v1"})


def manifest_files(root: Path) -> list[Path]:
    """Every JSON or YAML file under root, sorted."""
    return sorted(
        p for p in Path(root).rglob("*") if p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES
    )


def load_documents(path: Path) -> list[Any]:
    """The documents of one file: one for JSON, each non-empty document for YAML."""
    text = Path(path).read_text(encoding="utf-8")
    if Path(path).suffix.lower() == ".json":
        return [json.loads(text)]
    return [doc for doc in yaml.safe_load_all(text) if doc is not None]


def image_streams_in(document: Any) -> Iterator[dict[str, Any]]:
    """The ImageStreams in one document: itself, or the items of a (nested) list."""
    if not isinstance(document, dict):
        return
    kind = document.get("kind")
    if kind == IMAGESTREAM_KIND:
        yield document
    elif kind in LIST_KINDS:
        for item in document.get("items") or []:
            yield from image_streams_in(item)


def iter_image_streams(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """(path, ImageStream) for every ImageStream in every manifest file under root."""
    for path in manifest_files(root):
        for document in load_documents(path):
            for stream in image_streams_in(document):
                yield path, stream


def spec_tags(stream: dict[str, Any]) -> list[dict[str, Any]]:
    """The stream's spec tags ([] when there is no spec or no tags)."""
    return list((stream.get("spec") or {}).get("tags") or [])
