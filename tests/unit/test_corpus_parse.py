"""The stream parser and the file index read every real ImageStream of the corpus."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tests/corpus.py
import corpus

from webhook.model.streams import parse_image_stream, stream_entry
from webhook.serving.stream_index import load_streams

FIXTURES = list(corpus.iter_image_streams(corpus.FIXTURE_CORPUS))


def _parse_all(root: Path) -> tuple[int, int, set[str]]:
    streams = tags = 0
    kinds: set[str] = set()
    for _, obj in corpus.iter_image_streams(root):
        stream = parse_image_stream(obj)
        entry = stream_entry(stream)
        assert set(entry.images) == {t.name for t in stream.spec_tags}
        streams += 1
        tags += len(stream.spec_tags)
        kinds |= {t.source.kind for t in stream.spec_tags if t.source}
    return streams, tags, kinds


def test_fixture_corpus_parses() -> None:
    streams, tags, kinds = _parse_all(corpus.FIXTURE_CORPUS)
    assert tags >= streams
    assert streams == len(FIXTURES) > 20
    assert kinds == {"DockerImage", "ImageStreamTag"}


def test_file_index_loads_the_fixture_corpus_directory() -> None:
    assert len(load_streams(corpus.FIXTURE_CORPUS)) == len(FIXTURES)


def test_aliases_in_the_corpus_resolve_through_their_source() -> None:
    # Corpus streams carry spec only; a `latest` that tracks another tag has no image of
    # its own, and must report the same (empty) answer as its source, not an error.
    for _, obj in FIXTURES:
        stream = parse_image_stream(obj)
        entry = stream_entry(stream)
        assert all(image is None for image in entry.images.values())


@pytest.mark.skipif(not corpus.SHARED_CORPUS.is_dir(), reason="../shared corpus not present")
def test_full_shared_corpus_parses() -> None:
    streams, tags, _ = _parse_all(corpus.SHARED_CORPUS)
    assert (streams, tags) == (532, 3170)
    assert len(load_streams(corpus.SHARED_CORPUS)) == 532
