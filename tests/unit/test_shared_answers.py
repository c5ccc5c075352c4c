"""Scheduled checks' shared registry answers: who may share one, and for how long."""

from __future__ import annotations

import pytest

from webhook.controller.shared_answers import PRUNE_AT, SharedAnswers, answer_key
from webhook.registry.client import ManifestHead, Repository
from webhook.registry.credentials import Credential
from webhook.registry.manifests import OCI_MANIFEST, Manifest

DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


class Registry:
    """A ManifestSource whose tag `digest` points at; it counts the questions it answers."""

    def __init__(self) -> None:
        self.digest = DIGEST_A
        self.asked: list[tuple[str, Repository, str]] = []

    def head_manifest(self, repo: Repository, reference: str) -> ManifestHead:
        self.asked.append(("HEAD", repo, reference))
        return ManifestHead(self.digest, OCI_MANIFEST, 100)

    def get_manifest(self, repo: Repository, reference: str) -> Manifest:
        self.asked.append(("GET", repo, reference))
        return Manifest(self.digest, OCI_MANIFEST, b"{}")


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


ANONYMOUS = Repository("quay.io", "org/app")
ALICE = Repository("quay.io", "org/app", Credential("alice", "s3cret", "secret a/pull"))
ALICE_ELSEWHERE = Repository("quay.io", "org/app", Credential("alice", "s3cret", "secret b/pull"))
BOB = Repository("quay.io", "org/app", Credential("bob", "other", "secret c/pull"))


@pytest.fixture
def setup() -> tuple[Registry, Clock, SharedAnswers]:
    registry, clock = Registry(), Clock()
    return registry, clock, SharedAnswers(registry, 60.0, clock)


def test_the_same_question_within_the_window_is_asked_once(
    setup: tuple[Registry, Clock, SharedAnswers],
) -> None:
    registry, clock, shared = setup
    for _ in range(50):
        assert shared.head_manifest(ANONYMOUS, "v1").digest == DIGEST_A
        clock.now += 1.0  # fifty checks over 49 s
    assert len(registry.asked) == 1
    assert shared.shared == 49


def test_after_the_window_the_registry_is_asked_again_and_a_moved_tag_is_seen(
    setup: tuple[Registry, Clock, SharedAnswers],
) -> None:
    registry, clock, shared = setup
    shared.head_manifest(ANONYMOUS, "v1")
    registry.digest = DIGEST_B  # the tag moves
    clock.now += 60.0
    assert shared.head_manifest(ANONYMOUS, "v1").digest == DIGEST_A  # at most 60 s old
    clock.now += 0.5
    assert shared.head_manifest(ANONYMOUS, "v1").digest == DIGEST_B
    assert len(registry.asked) == 2


@pytest.mark.parametrize(
    "other",
    [
        BOB,  # another identity
        ALICE,  # credentials, where the first went anonymous
        Repository("quay.io", "org/app", insecure=True),  # may go over plain HTTP
        Repository("quay.io", "org/other"),  # another repository
        Repository("quay.io:443", "org/app"),  # the registry as written: another name
    ],
)
def test_answers_are_not_shared_between_different_requests(
    setup: tuple[Registry, Clock, SharedAnswers], other: Repository
) -> None:
    registry, _, shared = setup
    shared.head_manifest(ANONYMOUS, "v1")
    shared.head_manifest(other, "v1")
    assert len(registry.asked) == 2


def test_one_identity_shares_across_the_secrets_that_hold_it(
    setup: tuple[Registry, Clock, SharedAnswers],
) -> None:
    registry, _, shared = setup
    shared.head_manifest(ALICE, "v1")
    shared.head_manifest(ALICE_ELSEWHERE, "v1")
    assert len(registry.asked) == 1


def test_other_references_are_other_questions(
    setup: tuple[Registry, Clock, SharedAnswers],
) -> None:
    registry, _, shared = setup
    shared.head_manifest(ANONYMOUS, "v1")
    shared.head_manifest(ANONYMOUS, "v2")
    shared.head_manifest(ANONYMOUS, DIGEST_A)
    assert len(registry.asked) == 3


def test_a_fetched_manifest_answers_the_next_head(
    setup: tuple[Registry, Clock, SharedAnswers],
) -> None:
    registry, _, shared = setup
    assert shared.get_manifest(ANONYMOUS, "v1").digest == DIGEST_A
    assert shared.head_manifest(ANONYMOUS, "v1").digest == DIGEST_A
    assert [method for method, _, _ in registry.asked] == ["GET"]


def test_a_head_without_a_digest_is_not_shared() -> None:
    class NoDigest(Registry):
        def head_manifest(self, repo: Repository, reference: str) -> ManifestHead:
            self.asked.append(("HEAD", repo, reference))
            return ManifestHead(None, OCI_MANIFEST, None)

    registry = NoDigest()
    shared = SharedAnswers(registry, 60.0, Clock())
    shared.head_manifest(ANONYMOUS, "v1")
    shared.head_manifest(ANONYMOUS, "v1")
    assert len(registry.asked) == 2


def test_only_questions_asked_wait_for_the_rate_limits(
    setup: tuple[Registry, Clock, SharedAnswers],
) -> None:
    registry, clock, _ = setup
    waited: list[str] = []
    shared = SharedAnswers(registry, 60.0, clock, before_asking=lambda r: waited.append(r.path))
    for _ in range(5):
        shared.head_manifest(ANONYMOUS, "v1")
    shared.get_manifest(ANONYMOUS, "v2")
    assert waited == ["org/app", "org/app"]


def test_keys_hold_no_password() -> None:
    assert "s3cret" not in repr(answer_key(ALICE, "v1"))


def test_expired_answers_are_dropped_as_new_ones_come(
    setup: tuple[Registry, Clock, SharedAnswers],
) -> None:
    _, clock, shared = setup
    for i in range(PRUNE_AT):
        shared.head_manifest(ANONYMOUS, f"t{i}")
    clock.now += 61.0
    shared.head_manifest(ANONYMOUS, "new")
    assert len(shared) == 1
