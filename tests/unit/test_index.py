"""The stream index: file loading, updates, readiness."""

from __future__ import annotations

import json
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
