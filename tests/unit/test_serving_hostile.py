"""The webhook's app against hostile input (issue 15): every body answered, bounded answers,
metrics labels from a fixed set, no resolution from an index that has not loaded yet.

The same cases run against a real `imagestreams serve` in tests/reliability."""

from __future__ import annotations

import json
from typing import Any

import pytest
from flask.testing import FlaskClient
from streamdata import DIGEST_A, decoded_patch, image_stream, pod_spec, review, workload

from webhook.kube.policy_cache import PolicyIndex, StreamImages
from webhook.kube.watch import Tee
from webhook.serving import admission, limits, validation
from webhook.serving.app import INTERNAL_ERROR, AppConfig, create_app
from webhook.serving.metrics import kind_label
from webhook.serving.stream_index import StreamIndex

KEYCLOAK = f"quay.io/keycloak/keycloak@{DIGEST_A}"
STREAM = image_stream("keycloak", tags={"20.0": KEYCLOAK})


def client(*, loaded: bool = True, policies: list[dict[str, Any]] | None = None) -> FlaskClient:
    index, images = StreamIndex(), StreamImages()
    if loaded:
        Tee(index, images).replace_all([STREAM])
    policy = None
    if policies is not None:
        policy = PolicyIndex(index, images, namespace_wait=0)
        policy.policies.replace_all(policies)
        policy.namespaces.replace_all([])
    return create_app(AppConfig(index=index, policy=policy)).test_client()


def deployment(*images: str, **kw: Any) -> dict[str, Any]:
    return review("Deployment", workload("Deployment", pod_spec(*images)), **kw)


# --- the API server's warning rules ------------------------------------------------------


def test_warnings_within_the_total_are_kept_whole() -> None:
    texts = ["a" * 1000, "b" * 1000, "a" * 1000, "c" * 2000]  # a duplicate is dropped
    assert limits.warnings(texts) == ["a" * 1000, "b" * 1000, "c" * 2000]


def test_past_the_total_each_warning_is_cut_and_the_rest_counted() -> None:
    texts = [f"{i} " + "x" * 300 for i in range(40)]
    shown = limits.warnings(texts)
    assert len(shown) == 16 and all(len(w) <= limits.WARNING_ITEM for w in shown)
    assert shown[0] == texts[0][: limits.WARNING_ITEM - 1] + "…"
    assert shown[-1] == "25 more warning(s) not shown"
    assert sum(len(w) for w in shown) <= limits.WARNINGS_TOTAL


def test_control_characters_would_drop_a_warning_so_they_become_spaces() -> None:
    assert limits.warnings(["web\nserver: x\x00\x85y", "", "\t"]) == ["web server: x  y", " "]


# --- bodies that are not reviews ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [b"[" * 100_000 + b"]" * 100_000, b'{"a":' * 100_000 + b"1" + b"}" * 100_000],
    ids=["array", "object"],
)
@pytest.mark.parametrize("path", ["/mutate", "/validate"])
def test_deep_nesting_is_a_400(path: str, body: bytes) -> None:
    response = client(policies=[]).post(path, data=body, content_type="application/json")
    assert response.status_code == 400
    assert response.get_json() == {"error": "body is nested too deeply"}


def test_other_routes_and_methods_answer_json() -> None:
    app = client()
    assert app.get("/mutate").status_code == 405
    assert "error" in app.get("/mutate").get_json()
    assert app.get("/nope").get_json()["error"]


# --- metrics labels ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "label"),
    [("Deployment", "Deployment"), ("ImageStream", "ImageStream"), ("\ud800", "other"),
     (["Pod"], "other"), ("Unknown7", "other")],
)  # fmt: skip
def test_kind_label_is_from_a_fixed_set(kind: Any, label: str) -> None:
    assert kind_label({"kind": {"group": "", "kind": kind}}) == label


def test_a_hostile_kind_does_not_break_the_metrics() -> None:
    app = client()
    for kind in ("\ud800", "Kind1", "Kind2"):
        body = deployment("keycloak:20.0")
        body["request"]["kind"]["kind"] = kind
        sent = app.post("/mutate", data=json.dumps(body), content_type="application/json")
        assert sent.status_code == 200
    scrape = app.get("/metrics")
    assert scrape.status_code == 200
    text = scrape.get_data(as_text=True)
    assert 'kind="other",result="unchanged"} 3.0' in text
    assert "Kind1" not in text


# --- an index that has not loaded yet ----------------------------------------------------


def test_an_unloaded_index_is_not_ready_and_mutate_says_so() -> None:
    app = client(loaded=False)
    assert app.get("/readyz").status_code == 503
    answer = app.post("/mutate", json=deployment("keycloak:20.0")).get_json()
    assert answer["response"]["allowed"] is True and "patch" not in answer["response"]
    (warning,) = answer["response"]["warnings"]
    assert warning.startswith("image streams not loaded yet") and "c0=keycloak:20.0" in warning


def test_once_loaded_mutate_resolves() -> None:
    index = StreamIndex()
    app = create_app(AppConfig(index=index)).test_client()
    assert (
        "warnings" in app.post("/mutate", json=deployment("keycloak:20.0")).get_json()["response"]
    )
    index.replace_all([STREAM])
    assert app.get("/readyz").status_code == 200
    answer = app.post("/mutate", json=deployment("keycloak:20.0")).get_json()
    assert decoded_patch(answer)[0]["value"] == KEYCLOAK


# --- the last resort ---------------------------------------------------------------------


def test_a_bug_in_mutate_allows_unchanged_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: Any, **kw: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(admission, "mutate", broken)
    answer = client().post("/mutate", json=deployment("keycloak:20.0"))
    assert answer.status_code == 200
    assert answer.get_json()["response"] == {
        "uid": deployment()["request"]["uid"],
        "allowed": True,
        "warnings": [INTERNAL_ERROR],
    }


def test_a_bug_in_validate_leaves_it_to_the_failure_policy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(*args: Any, **kw: Any) -> Any:
        raise KeyError("bug")

    monkeypatch.setattr(validation, "answer", broken)
    response = client(policies=[]).post("/validate", json=deployment("nginx"))
    assert response.status_code == 400 and "internal error" in response.get_json()["error"]
