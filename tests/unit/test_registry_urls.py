"""The registry client's short way of preparing a request is the long way's equal."""

from __future__ import annotations

import random
import string

import requests

from webhook.registry.client import _plain

# Characters a URL may carry and a few it may not (spaces, %, non-ASCII, brackets, query).
PATH_ALPHABET = string.ascii_letters + string.digits + "._~/:@+-%?# é[]"
PORTS = ["", ":5000", ":1", ":443", ":0", ":05000", ":65535", ":65536", ":99999", ":41234"]


def random_url(rng: random.Random) -> str:
    labels = ["".join(rng.choices("abcxyz019-", k=rng.randint(1, 6))) for _ in range(3)]
    host = ".".join(labels[: rng.randint(1, 3)])
    path = "/" + "".join(rng.choices(PATH_ALPHABET, k=rng.randint(0, 24)))
    return f"{rng.choice(['http', 'https'])}://{host}{rng.choice(PORTS)}{path}"


def test_every_url_the_short_way_takes_is_one_prepare_leaves_unchanged() -> None:
    rng = random.Random(17)
    taken = 0
    for _ in range(30_000):
        url = random_url(rng)
        if not _plain(url):
            continue
        taken += 1
        prepared = requests.PreparedRequest()
        prepared.prepare(method="GET", url=url)
        assert prepared.url == url
    assert taken > 1_000  # the generator does reach the short way


def test_the_urls_of_an_import_take_the_short_way() -> None:
    digest = "sha256:" + "a" * 64
    for url in (
        "https://quay.io/v2/org/app/manifests/v1.2.3",
        f"https://registry-1.docker.io/v2/library/nginx/manifests/{digest}",
        "http://127.0.0.1:5000/v2/bench/app-0/manifests/t1",
        "http://127.0.0.1:41234/v2/bench/app-0/manifests/t1",
        "https://auth.docker.io/token",
    ):
        assert _plain(url), url
    for url in (
        "https://quay.io/v2/x?n=1",
        "https://Quay.io/v2/",
        "https://h/v2/./x",
        "https://h:65536/v2/",
    ):
        assert not _plain(url), url
