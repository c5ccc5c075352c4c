"""hack/chart_readme.py: the chart README's values table, generated from values.yaml and
values.schema.json, and checked in up to date."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "hack"))

import chart_readme  # noqa: E402

VALUES = """\
# --- a section rule, not a description ---------------------------------------------
# The image.
image:
  # Where it is pulled from.
  repository: r.example/app

  tag: ""
# Rules of the webhook.
rules:
  # A comment inside the list's value.
  - apiGroups: [""]
    resources: [pods]
after:
  expression: >-
    folded: not a key
  last: 1
"""


def test_the_checked_in_readme_is_up_to_date() -> None:
    assert chart_readme.main(["--check"]) == 0, "run: python hack/chart_readme.py"


def test_every_value_has_a_row() -> None:
    readme = (chart_readme.CHART / "README.md").read_text()
    values = yaml.safe_load((chart_readme.CHART / "values.yaml").read_text())
    for path, _ in chart_readme.leaves(values):
        assert f"| `{path}` |" in readme, path


def test_comments_are_the_block_right_above_each_key() -> None:
    found = chart_readme.comments(VALUES)
    assert found == {
        "image": "The image.",
        "image.repository": "Where it is pulled from.",
        "image.tag": "",  # a blank line parts it from the comment above
        "rules": "Rules of the webhook.",
        "after": "",
        "after.expression": "",
        "after.last": "",
    }


def test_defaults_types_and_descriptions() -> None:
    rows = {row.path: row for row in chart_readme.rows()}
    assert rows["crds.install"].default == "`true`"
    assert rows["crds.install"].type == "boolean"
    assert rows["webhook.rules"].default.endswith("items (see values.yaml)")
    assert "node IP" in rows["webhook.hostNetwork"].description
    # No comment in values.yaml: the schema's description.
    assert rows["webhook.timeoutSeconds"].description
    assert chart_readme.cell("a | <b>") == "a \\| &lt;b&gt;"


def test_a_stale_readme_is_reported(tmp_path: Path) -> None:
    chart = tmp_path / "chart"
    shutil.copytree(chart_readme.CHART, chart)
    values = chart / "values.yaml"
    values.write_text(values.read_text().replace("  replicas: 2\n", "  replicas: 3\n", 1))
    assert chart_readme.main(["--check", "--chart", str(chart)]) == 1
    assert chart_readme.main(["--chart", str(chart)]) == 0
    assert chart_readme.main(["--check", "--chart", str(chart)]) == 0
    assert "| `webhook.replicas` | integer | `3` |" in (chart / "README.md").read_text()
