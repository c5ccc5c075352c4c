"""Argument parsing of every user verb, with the cluster flags before or after the verb."""

from __future__ import annotations

import argparse
import json

import pytest

from webhook.cli import verbs as user_verbs
from webhook.cli.main import build_parser, main


def parse(*argv: str) -> argparse.Namespace:
    return build_parser().parse_args(argv)


CLUSTER = ("-n", "demo", "--context", "dev", "--kubeconfig", "/tmp/kc")


@pytest.mark.parametrize(
    "argv",
    [
        ("create", "is", "keycloak"),
        ("create", "imagestream", "keycloak"),
        ("create", "istag", "keycloak:20.0", "--from-image", "quay.io/k:20"),
        ("tag", "quay.io/k:20", "keycloak:20.0"),
        ("tag", "-d", "keycloak:20.0"),
        ("set", "image-lookup", "keycloak"),
        ("set", "triggers", "deploy/web"),
        ("describe", "is", "keycloak"),
        ("import-image", "keycloak:20.0"),
        ("rollback", "keycloak:20.0"),
    ],
)
@pytest.mark.parametrize("where", ["before", "after", "middle"])
def test_cluster_flags_anywhere(argv: tuple[str, ...], where: str) -> None:
    if where == "before":
        full = (*CLUSTER, *argv)
    elif where == "after":
        full = (*argv, *CLUSTER)
    else:
        full = (argv[0], *CLUSTER, *argv[1:])
    args = parse(*full)
    assert (args.namespace, args.context, args.kubeconfig) == ("demo", "dev", "/tmp/kc")


def test_no_flags_means_defaults() -> None:
    args = parse("describe", "is", "keycloak")
    assert (args.namespace, args.context, args.kubeconfig) == (None, None, None)
    assert args.run is user_verbs.run_describe
    assert args.names == ["keycloak"]


def test_create_is() -> None:
    args = parse("create", "is", "keycloak", "--lookup-local")
    assert args.run is user_verbs.run_create_stream
    assert (args.name, args.lookup_local) == ("keycloak", True)
    assert parse("create", "imagestream", "x").lookup_local is False


def test_create_istag_flags() -> None:
    args = parse(
        "create",
        "istag",
        "keycloak:20.0",
        "--from-image",
        "quay.io/k:20",
        "--scheduled",
        "--insecure",
        "--reference-policy",
        "Local",
        "--import-mode",
        "PreserveOriginal",
    )
    assert args.run is user_verbs.run_create_istag
    assert (args.name, args.from_image, args.from_ref) == ("keycloak:20.0", "quay.io/k:20", None)
    assert (args.scheduled, args.insecure, args.reference) == (True, True, False)
    assert (args.reference_policy, args.import_mode) == ("local", "PreserveOriginal")
    other = parse("create", "imagestreamtag", "k:1", "--from", "ops/k:2", "--reference")
    assert (other.from_ref, other.reference, other.reference_policy) == ("ops/k:2", True, "source")


def test_tag_flags() -> None:
    args = parse(
        "tag",
        "--source=docker",
        "openshift/ruby:2.0",
        "ruby:tip",
        "ruby:2",
        "--scheduled",
        "--insecure",
        "--reference-policy=local",
        "--import-mode=Legacy",
    )
    assert args.run is user_verbs.run_tag
    assert args.refs == ["openshift/ruby:2.0", "ruby:tip", "ruby:2"]
    assert (args.source, args.scheduled, args.insecure) == ("docker", True, True)
    assert (args.reference_policy, args.import_mode, args.delete, args.alias) == (
        "local",
        "Legacy",
        False,
        False,
    )
    alias = parse("tag", "--alias", "keycloak:20.0", "keycloak:latest")
    assert alias.alias
    delete = parse("tag", "-d", "keycloak:20.0", "keycloak:19.0")
    assert delete.delete and delete.refs == ["keycloak:20.0", "keycloak:19.0"]
    assert parse("tag", "x:1", "y:1", "--source", "ISTAG").source == "istag"


def test_set_image_lookup_flags() -> None:
    args = parse("set", "image-lookup", "keycloak", "deploy/web")
    assert args.run is user_verbs.run_set_image_lookup
    assert (args.names, args.enabled, args.all, args.list) == (
        ["keycloak", "deploy/web"],
        True,
        False,
        False,
    )
    assert parse("set", "image-lookup", "keycloak", "--enabled=false").enabled is False
    assert parse("set", "image-lookup", "--enabled=true", "keycloak").enabled is True
    assert parse("set", "image-lookup", "keycloak", "--enabled").enabled is True
    assert parse("set", "image-lookup", "--all").all
    assert parse("set", "image-lookup").names == []
    assert parse("set", "image-lookup", "deploy/web", "--list").list


def test_set_triggers_flags() -> None:
    args = parse(
        "set",
        "triggers",
        "deploy/web",
        "--from-image",
        "keycloak:20.0",
        "-c",
        "web,side",
        "--manual",
    )
    assert args.run is user_verbs.run_set_triggers
    assert (args.targets, args.from_image, args.containers) == (
        ["deploy/web"],
        "keycloak:20.0",
        "web,side",
    )
    assert (args.manual, args.auto, args.remove, args.remove_all) == (True, False, False, False)
    remove = parse("set", "triggers", "sts/db", "cj/x", "--from-image", "k:1", "--remove")
    assert remove.remove and remove.targets == ["sts/db", "cj/x"]
    assert parse("set", "triggers", "deploy/web", "--remove-all").remove_all
    assert parse("set", "triggers", "deploy/web", "--containers=web").containers == "web"


def test_import_image_and_rollback_flags() -> None:
    args = parse("import-image", "keycloak", "--timeout", "5")
    assert args.run is user_verbs.run_import_image
    assert (args.name, args.timeout) == ("keycloak", 5.0)
    assert parse("import-image", "keycloak:20.0").timeout == 60.0
    back = parse("rollback", "keycloak:20.0", "--to-revision", "3")
    assert back.run is user_verbs.run_rollback
    assert (back.name, back.to_revision) == ("keycloak:20.0", 3)
    assert parse("rollback", "keycloak:20.0").to_revision == 2


@pytest.mark.parametrize(
    "argv",
    [
        ("create",),
        ("create", "deployment", "x"),
        ("create", "is"),
        ("tag",),
        ("tag", "a:1", "b:1", "--reference-policy", "remote"),
        ("tag", "a:1", "b:1", "--import-mode", "Other"),
        ("tag", "a:1", "b:1", "--source", "git"),
        ("set",),
        ("set", "triggers"),
        ("set", "triggers", "deploy/web", "--auto", "--manual"),
        ("set", "image-lookup", "--enabled=maybe"),
        ("describe", "is"),
        ("describe", "pod", "x"),
        ("import-image",),
        ("import-image", "k", "--timeout", "soon"),
        ("rollback",),
        ("rollback", "k:1", "--to-revision", "two"),
    ],
)
def test_usage_errors_exit_2(argv: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        parse(*argv)
    assert exit_info.value.code == 2


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("tag", "quay.io/k:1"), "you must specify a source and at least one destination"),
        (("tag", "-d", "k:1", "--source", "docker"), "cannot specify a source kind when deleting"),
        (("tag", "-d", "k:1", "--alias"), "--alias and --delete may not be both specified"),
        (("tag", "k:1", "k:2", "--scheduled"), "only container images can have importing flags"),
        (("set", "triggers", "deploy/web", "--remove"), "--remove requires --from-image"),
        (("set", "triggers", "deploy/web", "--remove", "--remove-all"), "either --remove or"),
        (("set", "triggers", "deploy/web", "--remove-all", "--auto"), "may not be used with any"),
        (("set", "triggers", "deploy/web", "-c", "web"), "--containers only applies"),
    ],
)
def test_flag_combinations_fail_before_any_api_call(
    argv: tuple[str, ...],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # No cluster is configured: reaching the API would fail with a different message.
    monkeypatch.setenv("KUBECONFIG", "/nonexistent/kubeconfig")
    assert main(list(argv)) == 1
    assert message in capsys.readouterr().err


def test_parse_bool() -> None:
    assert user_verbs.parse_bool("False") is False
    assert user_verbs.parse_bool("1") is True
    with pytest.raises(argparse.ArgumentTypeError):
        user_verbs.parse_bool("maybe")


class _Failure:
    """What the kubernetes client raises, as data: status, reason and the Status body."""

    def __init__(self, status: int, body: dict[str, object] | None) -> None:
        self.status = status
        self.reason = "Reason"
        self.body = None if body is None else json.dumps(body)


def test_api_errors_keep_the_servers_message_and_add_what_to_do() -> None:
    missing = user_verbs._api_error(
        _Failure(
            404,
            {
                "message": 'imagestreams.image.openshift.io "x" not found',
                "reason": "NotFound",
                "details": {"name": "x"},
            },
        )
    )
    assert str(missing) == 'imagestreams.image.openshift.io "x" not found'
    assert (missing.status, missing.reason, missing.no_such_type) == (404, "NotFound", False)
    no_crd = user_verbs._api_error(
        _Failure(
            404,
            {
                "message": "the server could not find the requested resource",
                "reason": "NotFound",
                "details": {},
            },
        )
    )
    assert no_crd.no_such_type and "is the ImageStream CRD installed?" in str(no_crd)
    forbidden = user_verbs._api_error(_Failure(403, {"message": "x is forbidden"}))
    assert "ask a cluster administrator" in str(forbidden)
    assert str(user_verbs._api_error(_Failure(500, None))) == "Reason"


def test_retry_on_conflict() -> None:
    calls: list[int] = []

    def conflicting() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise user_verbs.ApiError("modified", 409, "Conflict")
        return "written"

    assert user_verbs.retry_on_conflict(conflicting) == "written" and len(calls) == 3

    def always() -> None:
        raise user_verbs.ApiError("modified", 409, "Conflict")

    with pytest.raises(user_verbs.ApiError):
        user_verbs.retry_on_conflict(always)
    calls.clear()

    def forbidden() -> None:
        calls.append(1)
        raise user_verbs.ApiError("no", 403)

    with pytest.raises(user_verbs.ApiError):
        user_verbs.retry_on_conflict(forbidden)
    assert len(calls) == 1
