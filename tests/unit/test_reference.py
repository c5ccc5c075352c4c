"""The image reference grammar, against a table of valid and invalid references."""

import re

import pytest

from webhook.model.reference import InvalidReference, Reference, parse, parse_normalized

SHA = "sha256:" + "a" * 64

VALID = [
    # (input, domain, path, tag, digest)
    ("mysql", "", "mysql", None, None),
    ("mysql:8.0", "", "mysql", "8.0", None),
    ("keycloak:20.0", "", "keycloak", "20.0", None),
    ("library/mysql", "", "library/mysql", None, None),
    ("docker.io/library/mysql:8", "docker.io", "library/mysql", "8", None),
    ("quay.io/keycloak/keycloak:20.0.2", "quay.io", "keycloak/keycloak", "20.0.2", None),
    ("localhost/app", "localhost", "app", None, None),
    ("localhost:5000/app:v1", "localhost:5000", "app", "v1", None),
    ("localhost:5000", "", "localhost", "5000", None),
    ("127.0.0.1:5000/ns/app@" + SHA, "127.0.0.1:5000", "ns/app", None, SHA),
    ("[::1]:5000/app:1", "[::1]:5000", "app", "1", None),
    ("[fe80::1]/app", "[fe80::1]", "app", None, None),
    ("Example.com/app", "Example.com", "app", None, None),
    ("registry:5000/a/b/c:tag", "registry:5000", "a/b/c", "tag", None),
    ("app:latest@" + SHA, "", "app", "latest", SHA),
    ("a__b.c-d---e", "", "a__b.c-d---e", None, None),
    ("app:" + "t" * 128, "", "app", "t" * 128, None),
    ("app:_under.Score-TAG", "", "app", "_under.Score-TAG", None),
    ("app@sha512:" + "b" * 128, "", "app", None, "sha512:" + "b" * 128),
]

INVALID = [
    ("", "empty"),
    (" mysql", "whitespace"),
    ("MySQL", "lowercase"),
    ("docker.io/Library/mysql", "lowercase"),
    ("mysql:", "invalid tag"),
    ("mysql:-x", "invalid tag"),
    ("mysql:" + "t" * 129, "invalid tag"),
    ("mysql@sha256:abc", "invalid digest"),
    ("mysql@sha256:" + "A" * 64, "lowercase hexadecimal"),
    ("mysql@md5:" + "a" * 32, "unsupported digest algorithm"),
    ("mysql@" + "a" * 64, "invalid digest"),
    ("a" * 64, "64-character hexadecimal"),
    ("-app", "invalid repository name"),
    ("app-", "invalid repository name"),
    ("a..b", "invalid repository name"),
    ("a/", "invalid repository name"),
    ("/a", "invalid repository name"),
    ("a//b", "invalid repository name"),
    ("-host.io/app", "invalid registry host"),
    ("host.io:port/app", "invalid registry host"),
    ("quay.io/", "empty"),
    ("x/" + "a" * 254, "255 characters"),
    ("app::tag", "invalid repository name"),
]


@pytest.mark.parametrize(("text", "domain", "path", "tag", "digest"), VALID)
def test_valid_references_parse_and_format_back(
    text: str, domain: str, path: str, tag: str | None, digest: str | None
) -> None:
    ref = parse(text)
    assert ref == Reference(domain, path, tag, digest)
    assert str(ref) == text


@pytest.mark.parametrize(("text", "reason"), INVALID)
def test_invalid_references_say_why(text: str, reason: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse(text)
    assert reason in str(info.value)
    assert repr(text) in str(info.value)


def test_name_of_exactly_255_characters_is_accepted() -> None:
    name = "x/" + "a" * 253
    assert len(name) == 255
    assert parse(name).path == name


def a(n: int) -> str:
    return "a" * n


# The path after the domain may have 255 characters, counted after normalizing (a Docker Hub
# name with its implied `library/`): distribution/reference v0.6 ParseNormalizedNamed, the
# parser container runtimes use. Rows from its reference_test.go / normalize_test.go and the
# boundaries either side, as v0.6.0 answers them. OpenShift's library-go parser counts the
# whole name as written instead; we differ on purpose where the comment says "library-go".
LENGTHS = [
    # (reference, valid)
    (a(246), True),  # docker.io/library/ + 246: path 254
    (a(247), True),  # path 255
    (a(248), False),  # path 256 with the implied library/ (library-go: valid)
    (a(255), False),  # (library-go: valid)
    (a(256), False),
    (a(247) + ":tag", True),
    (a(248) + ":tag", False),
    ("library/" + a(247), True),
    ("library/" + a(248), False),
    ("ns/" + a(252), True),
    ("ns/" + a(253), False),
    ("example.com/" + a(243), True),
    ("example.com/" + a(244), True),  # whole name 256 (library-go: invalid)
    ("example.com/" + a(254), True),
    ("example.com/" + a(255), True),  # the case (library-go: invalid)
    ("example.com/" + a(255) + ":tag", True),
    ("example.com/" + a(256), False),
    ("domain/" + a(256), False),  # no "." or ":": domain/ is part of the path
    ("localhost/" + a(255), True),
    ("localhost/" + a(256), False),
    ("docker.io/" + a(247), True),
    ("docker.io/" + a(248), False),  # docker.io/library/ + 248
    ("docker.io/" + a(254), False),
    ("docker.io/ns/" + a(252), True),  # path 255 (library-go: invalid)
    ("docker.io/ns/" + a(253), False),
    ("index.docker.io/" + a(248), False),
    ("a/" * 127 + "a", True),  # 255
    ("a/" * 128 + "a", False),  # 257
    ("bar:5000/" + a(63) + "/" + "b" * 182, True),  # whole name 255
    ("bar:5000/" + a(63) + "/" + "b" * 183, True),  # whole name 256 (library-go: invalid)
]


def short(text: str) -> str:
    """A test id: runs of a repeated character or `a/` written as `a*N`."""
    return re.sub(r"(a/|a|b)\1{9,}", lambda m: f"{m[1]}*{len(m[0]) // len(m[1])}", text)


@pytest.mark.parametrize(("text", "valid"), LENGTHS, ids=[short(t) for t, _ in LENGTHS])
def test_the_path_after_the_domain_may_have_255_characters(text: str, valid: bool) -> None:
    for parser in (parse, parse_normalized):
        if valid:
            parser(text)
        else:
            with pytest.raises(InvalidReference, match="not be more than 255 characters"):
                parser(text)


@pytest.mark.parametrize("n", range(247, 257))
def test_bare_names_count_the_implied_library_prefix(n: int) -> None:
    if n <= 247:
        assert parse_normalized(a(n)).path == "library/" + a(n)
    else:
        with pytest.raises(
            InvalidReference, match=r"255 characters \(counting the implied library/\)"
        ):
            parse(a(n))


@pytest.mark.parametrize(
    ("domain", "n"), [(d, n) for d in ("example.com", "") for n in (254, 255, 256)]
)
def test_path_boundaries_with_and_without_a_domain(domain: str, n: int) -> None:
    path = "x/" + a(n - 2)  # "x/" keeps a domainless path off Docker Hub's library/
    text = f"{domain}/{path}" if domain else path
    if n <= 255:
        assert parse(text).path == path
    else:
        with pytest.raises(InvalidReference, match="255 characters"):
            parse(text)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("mysql", "docker.io/library/mysql"),
        ("mysql:8", "docker.io/library/mysql:8"),
        ("bitnami/redis:7", "docker.io/bitnami/redis:7"),
        ("index.docker.io/mysql", "docker.io/library/mysql"),
        ("docker.io/mysql@" + SHA, "docker.io/library/mysql@" + SHA),
        ("quay.io/keycloak/keycloak:20.0", "quay.io/keycloak/keycloak:20.0"),
        ("localhost:5000/app", "localhost:5000/app"),
    ],
)
def test_normalization_fills_docker_hub_defaults(text: str, normalized: str) -> None:
    assert str(parse_normalized(text)) == normalized


@pytest.mark.parametrize(
    ("text", "short"),
    [
        ("keycloak", True),
        ("keycloak:20.0", True),
        ("keycloak@" + SHA, False),
        ("keycloak:20.0@" + SHA, False),
        ("library/keycloak", False),
        ("quay.io/keycloak", False),
        ("localhost/keycloak", False),
    ],
)
def test_short_names_have_no_registry_path_or_digest(text: str, short: bool) -> None:
    assert parse(text).is_short is short


def test_with_digest_drops_the_tag() -> None:
    assert str(parse("quay.io/a/b:1").with_digest(SHA)) == "quay.io/a/b@" + SHA
