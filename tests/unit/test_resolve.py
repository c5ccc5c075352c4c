"""`imagestreams resolve`: offline resolution of multi-document manifests."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from streamdata import DIGEST_A, DIGEST_B, image_stream

from webhook.cli import manifests
from webhook.cli.main import main
from webhook.cli.resolve import resolve_manifests
from webhook.serving.stream_index import file_index

MANIFESTS = """\
# a comment before the first document stays
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings   # untouched, comments and all
data: {a: "1"}
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      containers:
      - name: web
        image: keycloak:20.0
      - name: sidecar
        image: nginx:1.25
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
  namespace: other
spec:
  schedule: "0 0 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          - name: job
            image: keycloak:20.0
---
apiVersion: v1
kind: Pod
metadata: {name: later}
spec:
  containers: [{name: c, image: "keycloak:21.0"}]
"""


def _streams(tmp_path: Path) -> Path:
    path = tmp_path / "streams.yaml"
    path.write_text(
        yaml.safe_dump_all(
            [
                image_stream(
                    "keycloak", tags={"20.0": f"quay.io/k/keycloak@{DIGEST_A}", "21.0": None}
                ),
                image_stream(
                    "keycloak", namespace="other", tags={"20.0": f"quay.io/k/keycloak@{DIGEST_B}"}
                ),
            ]
        )
    )
    return path


def test_resolve_pins_short_names_and_leaves_the_rest(tmp_path, capsys) -> None:  # type: ignore[no-untyped-def]
    manifests = tmp_path / "app.yaml"
    manifests.write_text(MANIFESTS)
    assert (
        main(
            [
                "resolve",
                "-f",
                str(manifests),
                "--streams-file",
                str(_streams(tmp_path)),
                "-n",
                "team",
            ]
        )
        == 0
    )
    out, err = capsys.readouterr()
    docs = out.split("---\n")
    assert docs[0] == MANIFESTS.split("---\n")[0]  # byte for byte
    assert docs[3] == MANIFESTS.split("---\n")[3]
    deployment, cronjob = yaml.safe_load(docs[1]), yaml.safe_load(docs[2])
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert [c["image"] for c in containers] == [f"quay.io/k/keycloak@{DIGEST_A}", "nginx:1.25"]
    job = cronjob["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
    assert job["image"] == f"quay.io/k/keycloak@{DIGEST_B}"  # its own namespace's stream
    assert "Pod/later: c: image stream tag team/keycloak:21.0 has no image yet" in err


POD = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, image: keycloak:20.0}]\n"


def test_resolve_reads_stdin_from_the_installed_command(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "imagestreams"
    result = subprocess.run(
        [str(exe), "resolve", "-f", "-", "--streams-file", str(_streams(tmp_path)), "-n", "team"],
        input=POD,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (
        yaml.safe_load(result.stdout)["spec"]["containers"][0]["image"]
        == f"quay.io/k/keycloak@{DIGEST_A}"
    )


def test_resolve_reports_a_missing_streams_file(tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    manifests = tmp_path / "app.yaml"
    manifests.write_text(MANIFESTS)
    assert main(["resolve", "-f", str(manifests), "--streams-file", str(tmp_path / "nope")]) == 1
    assert "does not exist" in capsys.readouterr().err


# --- the loader ---------------------------------------------------------------------------


def test_the_locked_pyyaml_parses_with_libyaml() -> None:
    # The wheels in requirements.lock carry libyaml; without it a 50 MB manifest takes minutes.
    assert yaml.__with_libyaml__
    assert manifests.LOADER is yaml.CSafeLoader and manifests.DUMPER is yaml.CSafeDumper


def test_libyaml_and_the_pure_loader_write_the_same_manifests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    streams = file_index(str(_streams(tmp_path)))
    fast = resolve_manifests(MANIFESTS, streams, "team", "app.yaml")
    monkeypatch.setattr(manifests, "LOADER", yaml.SafeLoader)
    monkeypatch.setattr(manifests, "DUMPER", yaml.SafeDumper)
    pure = resolve_manifests(MANIFESTS, streams, "team", "app.yaml")
    assert fast == pure and fast.images_resolved == 2


# --- where: errors and warnings name the file, the document and the line -----------------

BROKEN = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: a}
---
# a comment-only line
---
apiVersion: v1
kind: Pod
metadata:
  name: p
spec:
  containers:
  - name: c
    image: keycloak:20.0
   bad: indent
"""


def test_a_document_that_is_not_yaml_is_named_by_file_document_and_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(BROKEN)
    argv = ["resolve", "-f", str(path), "--streams-file", str(_streams(tmp_path))]
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith(f"error: {path}:15:4: document 3: not valid YAML: ")


def test_policy_check_names_the_place_of_bad_yaml_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(BROKEN)
    policies = tmp_path / "policies.yaml"
    policies.write_text("")
    argv = ["policy", "check", "-f", str(path), "--policies-file", str(policies)]
    assert main([*argv, "--streams-file", str(_streams(tmp_path))]) == 1
    assert capsys.readouterr().err.startswith(f"error: {path}:15:4: document 3: not valid YAML")


def test_warnings_name_the_line_of_the_image(tmp_path: Path) -> None:
    result = resolve_manifests(MANIFESTS, file_index(str(_streams(tmp_path))), "team", "app.yaml")
    line = MANIFESTS.splitlines().index('  containers: [{name: c, image: "keycloak:21.0"}]') + 1
    assert result.warnings == [
        f"app.yaml:{line}: Pod/later: c: image stream tag team/keycloak:21.0 has no image yet"
        " (not imported); keycloak:21.0 left as is"
    ]


# --- --strict and the exit codes ------------------------------------------------------------

PINNABLE = POD  # keycloak:20.0, which the team's stream pins
NOT_IMPORTED = (
    "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: keycloak:21.0}\n"
)
NO_STREAM = (
    "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: nginx:1.25}\n"
)
LOOKUP_OFF = "kind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n  - {name: c, image: redis}\n"


def _resolve(tmp_path: Path, manifest: str, *flags: str) -> subprocess.CompletedProcess[str]:
    """The installed command, as a pipeline runs it; its exit code is what CI sees."""
    streams = _streams(tmp_path)
    with streams.open("a") as f:
        f.write("---\n" + yaml.safe_dump(image_stream("redis", local=False, tags={"latest": None})))
    path = tmp_path / "app.yaml"
    path.write_text(manifest)
    exe = Path(sys.executable).parent / "imagestreams"
    argv = [str(exe), "resolve", "-f", str(path), "--streams-file", str(streams), "-n", "team"]
    return subprocess.run([*argv, *flags], capture_output=True, text=True, timeout=60)


def test_strict_exit_0_when_every_short_name_is_pinned(tmp_path: Path) -> None:
    result = _resolve(tmp_path, PINNABLE, "--strict")
    assert (result.returncode, result.stderr) == (0, "")
    assert f"quay.io/k/keycloak@{DIGEST_A}" in result.stdout


@pytest.mark.parametrize(
    ("manifest", "image", "reason"),
    [
        (
            NOT_IMPORTED,
            "keycloak:21.0",
            "image stream tag team/keycloak:21.0 has no image yet (not imported)",
        ),
        (NO_STREAM, "nginx:1.25", "no image stream team/nginx"),
        (LOOKUP_OFF, "redis", "image stream team/redis does not have lookupPolicy.local"),
    ],
    ids=["tag without image", "no stream", "lookup off"],
)
def test_strict_exit_3_names_each_image_left_unpinned(
    tmp_path: Path, manifest: str, image: str, reason: str
) -> None:
    result = _resolve(tmp_path, manifest, "--strict")
    assert result.returncode == 3
    assert result.stdout == ""  # nothing a later step could take for pinned manifests
    first, total = result.stderr.splitlines()
    assert first.startswith(f"error: {tmp_path / 'app.yaml'}:5: Pod/p: c: {image} not pinned: ")
    assert reason in first
    assert total == "error: 1 image(s) not pinned (--strict)"


def test_without_strict_the_same_input_exits_0(tmp_path: Path) -> None:
    result = _resolve(tmp_path, NOT_IMPORTED)
    assert result.returncode == 0
    assert yaml.safe_load(result.stdout)["spec"]["containers"][0]["image"] == "keycloak:21.0"
    assert "Warning: " in result.stderr


def test_exit_1_for_a_document_that_is_not_yaml(tmp_path: Path) -> None:
    result = _resolve(tmp_path, BROKEN, "--strict")
    assert result.returncode == 1 and "document 3: not valid YAML" in result.stderr


def test_exit_2_for_a_usage_error(tmp_path: Path) -> None:
    exe = Path(sys.executable).parent / "imagestreams"
    result = subprocess.run(
        [str(exe), "resolve", "-f", "-", "--strict"], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2 and "--streams-file" in result.stderr


COMMENTED = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # the storefront
spec:
  template:
    spec:
      initContainers:
      - {name: init, image: 'keycloak:20.0'}  # flow style, single quotes
      containers:
      - name: web
        image: "keycloak:20.0"   # double quotes
      - name: plain
        image: keycloak:20.0
"""


def test_pinned_documents_keep_their_comments_and_quoting(tmp_path: Path) -> None:
    result = resolve_manifests(COMMENTED, file_index(str(_streams(tmp_path))), "team", "a.yaml")
    pinned = f"quay.io/k/keycloak@{DIGEST_A}"
    assert result.text == (
        COMMENTED.replace("'keycloak:20.0'", f"'{pinned}'")
        .replace('"keycloak:20.0"', f'"{pinned}"')
        .replace("image: keycloak:20.0", f"image: {pinned}")
    )
    assert result.images_resolved == 3


def test_an_image_written_as_a_block_scalar_is_pinned_by_dumping_the_document(
    tmp_path: Path,
) -> None:
    manifest = NOT_IMPORTED.replace(
        "{name: c, image: keycloak:21.0}", "name: c\n    image: >-\n      keycloak:20.0"
    )
    result = resolve_manifests(manifest, file_index(str(_streams(tmp_path))), "team", "a.yaml")
    pod = yaml.safe_load(result.text)
    assert pod["spec"]["containers"][0]["image"] == f"quay.io/k/keycloak@{DIGEST_A}"
    assert pod["metadata"] == {"name": "p"}
    assert ">-" not in result.text  # dumped anew, not edited in place


ALIASED = """\
kind: Pod
metadata: {name: p}
spec:
  containers:
  - {name: a, image: &img keycloak:20.0}
  - {name: b, image: *img}
  - {name: c, image: !!str keycloak:20.0}
"""


PINNED = f"quay.io/k/keycloak@{DIGEST_A}"


@pytest.mark.parametrize(
    ("manifest", "expected"),
    [
        (ALIASED, [PINNED, PINNED, PINNED]),
        (ALIASED.replace("!!str keycloak:20.0", "nginx"), [PINNED, PINNED, "nginx"]),
        (
            ALIASED.replace("&img keycloak:20.0", "nginx").replace("*img", "nginx"),
            ["nginx", "nginx", PINNED],
        ),
    ],
    ids=["anchor, alias and tag", "anchor and alias", "tag"],
)
def test_anchors_aliases_and_tags_are_pinned_by_dumping_the_document(
    tmp_path: Path, manifest: str, expected: list[str]
) -> None:
    result = resolve_manifests(manifest, file_index(str(_streams(tmp_path))), "team", "a.yaml")
    assert [c["image"] for c in yaml.safe_load(result.text)["spec"]["containers"]] == expected
    assert "&img" not in result.text and "!!str" not in result.text  # dumped anew
