"""Multi-document YAML as pipelines hand it over: each document's own text, where it is in
the file, and what it parses to, for `resolve` and `policy check`.

libyaml parses when the installed PyYAML has it (the locked wheels do): a 50 MB manifest
took 358 s with the pure-Python loader. Both loaders build the same objects from the same
YAML 1.1 rules; the pure one stays as the fallback for a PyYAML built without libyaml.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

LOADER: type[Any] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DUMPER: type[Any] = getattr(yaml, "CSafeDumper", yaml.SafeDumper)

_DOC_SEPARATOR = re.compile(r"^---[ \t]*(?:#.*)?$", re.MULTILINE)
# Scalars whose text can be swapped in place: plain (None in PyYAML, "" in libyaml's parser)
# and quoted; and values that read the same plain, single- or double-quoted (image refs do).
_INLINE_STYLES = (None, "", "'", '"')
_VERBATIM = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/@+-]*")


class ManifestError(ValueError):
    """A document that cannot be read; the message names the file, document and line."""


@dataclass(frozen=True)
class Document:
    text: str  # exactly as in the file, separators excluded
    index: int  # 1-based, counting documents with any content (what a reader counts)
    line: int  # the file line `text` starts on, 1-based
    obj: Any  # what it parses to (None for an empty document)
    node: yaml.Node | None  # the parse tree, for the lines of fields

    def line_of(self, pointer: str) -> int:
        """The file line of the field at JSON pointer `pointer` (the document's first line
        when the pointer does not lead to a node)."""
        node = self._node_at(pointer)
        return self.line + node.start_mark.line if node is not None else self.line

    def with_scalars(self, values: Mapping[str, str]) -> str | None:
        """The text with the scalar at each JSON pointer replaced by its value and every
        other character as written (comments, order, quoting), or None when one of them is
        not a one-line plain or quoted scalar or the value would need escaping in it."""
        spans = {}
        for pointer, value in values.items():
            node = self._node_at(pointer)
            if not (
                isinstance(node, yaml.ScalarNode)
                and node.style in _INLINE_STYLES
                and node.start_mark.line == node.end_mark.line
                and _VERBATIM.fullmatch(value)
            ):
                return None
            start, end = node.start_mark.index, node.end_mark.index
            # An anchor or a tag starts the node's text: an alias elsewhere may name it, so
            # it is not ours to rewrite; and one node reached twice is an alias.
            if self.text[start] in "&!" or start in spans:
                return None
            quote = node.style or ""
            spans[start] = (end, f"{quote}{value}{quote}")
        text = self.text
        for start, (end, new) in sorted(spans.items(), reverse=True):
            text = text[:start] + new + text[end:]
        return text

    def _node_at(self, pointer: str) -> yaml.Node | None:
        node = self.node
        for token in pointer.split("/")[1:]:
            node = _child(node, token)
        return node


def documents(text: str, source: str) -> Iterator[Document]:
    """Every document of `text` (empty ones too, so that joining their texts with `---`
    gives the file back). Raises ManifestError naming `source`, the document and the line."""
    index = 0
    for piece, line in _pieces(text):
        if piece.strip():
            index += 1
        obj, node = _parse(piece, source, index, line)
        yield Document(piece, index, line, obj, node)


def dump(obj: Any) -> str:
    return str(yaml.dump(obj, Dumper=DUMPER, sort_keys=False, default_flow_style=False))


def _pieces(text: str) -> Iterator[tuple[str, int]]:
    """(text, first line) of each document; separators removed, nothing else touched."""
    start, line = 0, 1
    for match in _DOC_SEPARATOR.finditer(text):
        yield text[start : match.start()], line
        line += text.count("\n", start, match.end()) + 1
        start = match.end() + 1
    yield text[start:], line


def _parse(piece: str, source: str, index: int, line: int) -> tuple[Any, yaml.Node | None]:
    loader = LOADER(piece)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.YAMLError as err:
        raise ManifestError(_describe(err, source, index, line)) from None
    finally:
        loader.dispose()


def _describe(err: yaml.YAMLError, source: str, index: int, line: int) -> str:
    mark = getattr(err, "problem_mark", None)
    if isinstance(err, yaml.MarkedYAMLError) and mark is not None:
        what = " ".join(str(p) for p in (err.context, err.problem) if p)
        return (
            f"{source}:{line + mark.line}:{mark.column + 1}: document {index}: "
            f"not valid YAML: {what}"
        )
    return f"{source}:{line}: document {index}: not valid YAML: {err}"


def _child(node: yaml.Node | None, token: str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        return next((v for k, v in node.value if getattr(k, "value", None) == token), None)
    if isinstance(node, yaml.SequenceNode) and token.isdigit() and int(token) < len(node.value):
        child: yaml.Node = node.value[int(token)]
        return child
    return None
