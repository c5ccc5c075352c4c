"""The CLI's messages for the mistakes people make first: no cluster configured, a `-f` file
that is not there. Each says what is wrong and what to do, with exit code 1, no traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.cli.main import main


@pytest.fixture
def no_cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No $KUBECONFIG, an empty home (no ~/.kube/config), not in a pod."""
    monkeypatch.delenv("KUBECONFIG", raising=False)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


@pytest.mark.parametrize(
    "argv",
    [
        ["describe", "is", "keycloak"],
        ["import-image", "keycloak:20.0"],
        ["controller"],
        ["certs-sync", "--secret", "s", "--webhook", "w", "--service", "svc"],
    ],
    ids=lambda argv: argv[0],
)
def test_no_kubeconfig_says_where_it_looked(
    no_cluster: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: no cluster configuration:"), err
    assert f"{no_cluster}/.kube/config does not exist" in err
    assert "KUBERNETES_SERVICE_HOST" in err and "--kubeconfig" in err
    assert "Service host/port" not in err and "Traceback" not in err


def test_a_kubeconfig_that_is_not_there(
    no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = no_cluster / "nope.yaml"
    assert main(["--kubeconfig", str(missing), "describe", "is", "keycloak"]) == 1
    assert capsys.readouterr().err == f"error: kubeconfig {missing} does not exist\n"


def test_a_context_that_is_not_in_the_kubeconfig(
    no_cluster: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    kubeconfig = no_cluster / "config"
    kubeconfig.write_text("apiVersion: v1\nkind: Config\nclusters: []\ncontexts: []\n")
    assert main(["--kubeconfig", str(kubeconfig), "--context", "dev", "describe", "is", "x"]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"error: kubeconfig {kubeconfig}: ") and "dev" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["resolve", "--streams-file", "streams.yaml", "-f"],
        ["policy", "check", "--streams-file", "s.yaml", "--policies-file", "p.yaml", "-f"],
    ],
    ids=["resolve", "policy check"],
)
def test_a_missing_manifest_file(
    tmp_path: Path, argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "app.yaml"
    assert main([*argv, str(missing)]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {missing}: no such file (-f takes a file, or - for stdin)\n"


def test_a_directory_given_as_the_manifest_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["resolve", "--streams-file", "s.yaml", "-f", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"error: {tmp_path}: is a directory (-f takes one file)\n"
