"""Adversarial AdmissionReview bodies: real reviews, mutated by a seeded random generator.

`bodies(seed, count)` yields (name, bytes) pairs, always the same for the same seed. Most are
well-formed reviews whose fields were given odd types or values (a list where a string
belongs, a lone surrogate, a huge string, a deleted key, a value from elsewhere in the
review); the rest are broken at the byte level (truncated, bit-flipped, deeply nested, not
UTF-8), which the webhook must answer with a 400.
"""

from __future__ import annotations

import copy
import json
import random
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "unit"))
from streamdata import DIGEST_A, image_stream, pod_spec, review, workload

RESOLVE_NAMES = "alpha.image.policy.openshift.io/resolve-names"

# Values a review's fields can be swapped for: every JSON type, the edges of each, and the
# strings that have broken webhooks before (a lone surrogate, a huge one, references).
ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    5,
    2**70,
    1.5e308,
    "",
    "\ud800",
    "\x00\n\t",
    "*",
    "x" * 5000,
    "keycloak:20.0",
    "quay.io/x/app@" + DIGEST_A,
    "Deployment",
    "image.openshift.io",
    "CREATE",
    "UPDATE",
    [],
    {},
    [None],
    [[]],
    ["a", 1],
    {"": None},
    {"kind": ["x"], "group": ["y"]},
    [{"name": ["x"], "image": ["y"]}],
]


def seeds() -> list[tuple[str, dict[str, Any]]]:
    """Real review bodies, one per path through the webhook: resolution of every kind of
    pod spec, updates, forced names, owners, ImageStreams, each policy mode."""
    deployment = workload(
        "Deployment", pod_spec("keycloak:20.0", "nginx:1", init=("keycloak:21.0",)), name="web"
    )
    deployment["metadata"]["labels"] = {"app": "web", "tier": "frontend"}
    forced = workload("CronJob", pod_spec("quay.io/team/keycloak:20.0"), name="nightly")
    forced["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] = {
        RESOLVE_NAMES: "*"
    }
    pod = workload("Pod", pod_spec("keycloak:20.0", ephemeral=("busybox",)), name="p")
    owned = copy.deepcopy(pod)
    owned["metadata"]["ownerReferences"] = [
        {"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs", "controller": True}
    ]
    new_pod = copy.deepcopy(pod)
    new_pod["spec"]["containers"][0]["image"] = "keycloak:21.0"
    stream = image_stream(
        "keycloak", tags={"20.0": f"quay.io/keycloak/keycloak@{DIGEST_A}", "21.0": None}
    )
    stream["metadata"]["generation"] = 2
    edited = copy.deepcopy(stream)
    edited["spec"]["tags"][0]["from"]["name"] = "nginx:1.25"
    return [
        ("deployment", review("Deployment", deployment)),
        ("deployment-warned", review("Deployment", deployment, namespace="dev")),
        ("deployment-audited", review("Deployment", deployment, namespace="audited")),
        ("cronjob-forced", review("CronJob", forced)),
        ("pod-owned", review("Pod", owned)),
        ("pod-update", review("Pod", new_pod, operation="UPDATE", old=pod)),
        (
            "pod-ephemeral",
            review("Pod", new_pod, operation="UPDATE", old=pod, sub_resource="ephemeralcontainers"),
        ),
        ("statefulset", review("StatefulSet", workload("StatefulSet", pod_spec("keycloak")))),
        ("podtemplate", review("PodTemplate", workload("PodTemplate", pod_spec("keycloak:20.0")))),
        ("stream-create", review("ImageStream", stream)),
        ("stream-update", review("ImageStream", edited, operation="UPDATE", old=stream)),
    ]


MAX_BODY = 256 * 1024  # a mutation that would grow a body past this is dropped


def bodies(seed: int, count: int) -> Iterator[tuple[str, bytes]]:
    rng = random.Random(seed)
    reviews = seeds()
    for i in range(count):
        name, body = rng.choice(reviews)
        data = _encode(body)
        if rng.random() < 0.85:
            for _ in range(rng.randint(1, 4)):
                mutated = _encode(_mutate(rng, json.loads(data)))
                if len(mutated) <= MAX_BODY:
                    data = mutated
            yield f"{i}:{name}:fields", data
        else:
            breaker = rng.choice(BYTE_BREAKERS)
            yield f"{i}:{name}:{breaker.__name__}", breaker(rng, data)


def _encode(body: Any) -> bytes:
    # Python's encoder writes a lone surrogate as an escape, as a Go client would send it.
    return json.dumps(body).encode()


# --- field-level mutations ------------------------------------------------------------------


def _mutate(rng: random.Random, body: Any) -> Any:
    """One change at a random place of `body` (returned; the top level may be replaced)."""
    places = list(_places(body))
    container, key = rng.choice(places)
    if container is None:
        return rng.choice(ODD_VALUES)
    current = container[key]
    choice = rng.random()
    if choice < 0.45:
        container[key] = copy.deepcopy(rng.choice(ODD_VALUES))
    elif choice < 0.55 and isinstance(container, dict):
        del container[key]
    elif choice < 0.65:
        container[key] = [current]
    elif choice < 0.75:
        # Another value of the same review in this place: realistic types, wrong spot.
        donor, donor_key = rng.choice(places[1:])
        container[key] = json.loads(json.dumps(donor[donor_key]))
    elif choice < 0.85 and isinstance(current, list) and current:
        container[key] = current * rng.randint(2, 40)
    elif choice < 0.95 and isinstance(container, dict):
        container[rng.choice(["extra", "", "\ud800", key + "x"])] = rng.choice(ODD_VALUES)
    else:
        container[key] = _nested(rng.randint(20, 120), current)
    return body


def _places(body: Any) -> Iterator[tuple[Any, Any]]:
    """(container, key) for every value of `body`, and (None, None) for the body itself."""
    yield None, None
    stack = [body] if isinstance(body, dict | list) else []
    while stack:
        node = stack.pop()
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, value in list(items):
            yield node, key
            if isinstance(value, dict | list):
                stack.append(value)


def _nested(depth: int, inner: Any) -> Any:
    for _ in range(depth):
        inner = [inner]
    return inner


# --- byte-level breakage (each must get a 400) -----------------------------------------------


def truncated(rng: random.Random, data: bytes) -> bytes:
    return data[: rng.randrange(len(data))]


def bit_flipped(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
    return bytes(out)


def deeply_nested(rng: random.Random, data: bytes) -> bytes:
    depth = rng.choice([1_000, 5_000, 50_000])
    opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
    return opener * depth + data + closer * depth


def not_utf8(rng: random.Random, data: bytes) -> bytes:
    at = rng.randrange(len(data))
    return data[:at] + rng.choice([b"\xff", b"\xc3\x28", b"\xed\xa0\x80"]) + data[at:]


def not_an_object(rng: random.Random, data: bytes) -> bytes:
    return rng.choice([b"[]", b"null", b'"review"', b"1e999", b"NaN", b"", b"{}", b"[" + data])


BYTE_BREAKERS: list[Callable[[random.Random, bytes], bytes]] = [
    truncated,
    bit_flipped,
    deeply_nested,
    not_utf8,
    not_an_object,
]
