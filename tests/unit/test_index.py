"""The stream index: file loading, updates, readiness."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from streamdata import DIGEST_A, DIGEST_B, image_stream

from webhook.serving.stream_index import StreamIndex, file_index, load_streams


def test_index_is_not_ready_until_a_full_list() -> None:
    index = StreamIndex()
    assert not index.ready
    index.upsert(image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_A}"}))
    assert not index.ready
    index.replace_all([])
    assert index.ready and len(index) == 0


def test_upsert_delete_and_replace() -> None:
    index = StreamIndex()
    index.replace_all([image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_A}"})])
    assert index.get("team", "a").images["1"] == f"quay.io/x/a@{DIGEST_A}"  # type: ignore[union-attr]
    index.upsert(image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_B}"}))
    assert index.get("team", "a").images["1"] == f"quay.io/x/a@{DIGEST_B}"  # type: ignore[union-attr]
    assert index.get("other", "a") is None
    index.delete({"metadata": {"name": "a", "namespace": "team"}})
    assert index.get("team", "a") is None


def test_an_invalid_stream_is_dropped_not_fatal() -> None:
    index = StreamIndex()
    good = image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_A}"})
    index.replace_all([good, {"metadata": {"name": "b", "namespace": "team"}, "spec": []}])
    assert len(index) == 1
    index.upsert({"metadata": {"name": "a", "namespace": "team"}, "spec": {"tags": 3}})
    assert index.get("team", "a") is None  # an update that breaks it removes the old answer


def test_load_streams_from_multi_doc_yaml_lists_and_json(tmp_path: Path) -> None:
    a = image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_A}"})
    b = image_stream("b", tags={})
    c = image_stream("c", tags={})
    configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}
    (tmp_path / "multi.yaml").write_text(yaml.safe_dump_all([a, configmap, None]))
    (tmp_path / "sub").mkdir()
    listing = {"apiVersion": "v1", "kind": "List", "items": [b]}
    (tmp_path / "sub" / "list.json").write_text(json.dumps(listing))
    (tmp_path / "sub" / "is-list.yml").write_text(
        yaml.safe_dump({"kind": "ImageStreamList", "items": [c]})
    )
    (tmp_path / "notes.txt").write_text("not a manifest")
    names = sorted(s["metadata"]["name"] for s in load_streams(tmp_path))
    assert names == ["a", "b", "c"]
    assert file_index(tmp_path / "multi.yaml").get("team", "a") is not None


def test_load_streams_errors_are_clear(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_streams(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [unclosed")
    with pytest.raises(ValueError, match=r"bad\.yaml: not valid YAML"):
        load_streams(bad)


class _Obj(dict):  # type: ignore[type-arg]
    """A stream that can be watched for being freed (a plain dict takes no weak reference)."""


def test_a_tee_feeds_its_sinks_one_object_at_a_time() -> None:
    """A list reaches both sinks in one pass: objects already handed over are not kept, so
    a paginated list or a file read stream by stream is never held whole."""
    import weakref

    from webhook.kube.policy_cache import StreamImages
    from webhook.kube.watch import Tee

    alive: list[weakref.ref[_Obj]] = []

    def streams() -> Iterator[_Obj]:
        for i in range(50):
            assert sum(ref() is not None for ref in alive) <= 1, "earlier objects were kept"
            obj = _Obj(image_stream(f"s{i}", tags={"v1": f"quay.io/x/s{i}@{DIGEST_A}"}))
            alive.append(weakref.ref(obj))
            yield obj
            del obj

    index, images = StreamIndex(), StreamImages()
    Tee(index, images).replace_all(streams())
    assert len(index) == 50 and len(images) == 50 and index.ready and images.ready
    assert index.get("team", "s49") is not None
    assert images.contains("team", "quay.io/x/s49", DIGEST_A)


def test_stream_images_keep_a_few_bytes_per_image() -> None:
    """The policy side's images of a stream's history cost bytes, not strings: 10,000
    streams x 5 tags x 3 history items took 44 MiB as (repository, digest) tuples, three
    times the admission index."""
    import tracemalloc

    from webhook.kube.policy_cache import StreamImages

    def streams() -> Iterator[dict[str, object]]:
        for i in range(300):
            obj = image_stream(f"s{i}", namespace=f"team-{i % 3}")
            obj["status"]["tags"] = [
                {
                    "tag": tag,
                    "items": [
                        {
                            "dockerImageReference": f"quay.io/x/s{i}@sha256:{i:020d}{tag}{h:043d}",
                            "image": f"sha256:{i:020d}{tag}{h:043d}",
                            "created": "2026-11-01T10:00:00Z",
                            "generation": 1,
                        }
                        for h in range(3)
                    ],
                }
                for tag in "abcde"
            ]
            yield obj

    images = StreamImages()
    tracemalloc.start()
    try:
        images.replace_all(streams())
        kept = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert images.contains("team-1", "quay.io/x/s7", f"sha256:{7:020d}c{2:043d}")
    assert not images.contains("team-2", "quay.io/x/s7", f"sha256:{7:020d}c{2:043d}")
    pairs = 300 * 5 * 3
    assert kept / pairs < 64, f"{kept / pairs:.0f} bytes per image"


def test_a_json_streams_file_is_indexed_one_stream_at_a_time(tmp_path: Path) -> None:
    """`serve --streams-file` with a JSON List (as `kubectl get is -A -o json` writes it,
    kind after the items): the parse never holds the whole list, only the index stays."""
    import tracemalloc

    items = [
        image_stream(f"s{i}", tags={t: f"quay.io/x/s{i}@sha256:{i:056d}{t:0>8}" for t in "abcde"})
        for i in range(500)
    ]
    path = tmp_path / "streams.json"
    path.write_text(json.dumps({"apiVersion": "v1", "items": items, "kind": "List"}))
    del items
    tracemalloc.start()
    try:
        index = file_index(path)
        kept, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(index) == 500 and index.get("team", "s499") is not None
    assert peak - kept < 2 * 2**20, f"{(peak - kept) / 2**20:.1f} MiB parsed at once"


def test_stream_images_keep_the_last_of_a_stream_listed_twice() -> None:
    """Two files may hold the same stream: its last copy counts, as in the admission index."""
    from webhook.kube.policy_cache import StreamImages

    images = StreamImages()
    images.replace_all(
        [
            image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_A}"}),
            image_stream("b", tags={"1": f"quay.io/x/a@{DIGEST_A}"}),
            image_stream("a", tags={"1": f"quay.io/x/a@{DIGEST_B}"}),
        ]
    )
    assert images.contains("team", "quay.io/x/a", DIGEST_A)  # b still holds it
    assert images.contains("team", "quay.io/x/a", DIGEST_B)
    images.delete({"metadata": {"name": "b", "namespace": "team"}})
    assert not images.contains("team", "quay.io/x/a", DIGEST_A)
    assert images.contains("team", "quay.io/x/a", DIGEST_B) and len(images) == 1
