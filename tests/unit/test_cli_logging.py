"""`--log-format json` writes one JSON object a line; secrets never reach the logs."""

from __future__ import annotations

import json
import logging
import re

import pytest

from webhook.cli.main import configure_logging, duration

ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def test_json_log_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", logging.INFO)
    logging.getLogger("webhook.controller").warning("import of %s failed", "team/app:1")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    record = json.loads(line)
    assert record["level"] == "WARNING"
    assert record["logger"] == "webhook.controller"
    assert record["message"] == "import of team/app:1 failed"
    assert ISO_UTC.fullmatch(record["time"]), record["time"]
    configure_logging("text", logging.INFO)


def test_text_log_lines_have_iso_utc_times(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", logging.INFO)
    logging.getLogger("webhook.serving").info("listening")
    line = capsys.readouterr().err.strip().splitlines()[-1]
    stamp, rest = line.split(" ", 1)
    assert ISO_UTC.fullmatch(stamp), line
    assert rest == "INFO webhook.serving: listening"


@pytest.mark.parametrize(
    ("text", "seconds"), [("90", 90), ("30s", 30), ("15m", 900), ("1h30m", 5400), ("2.5s", 2.5)]
)
def test_durations(text: str, seconds: float) -> None:
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0", "abc", "5d", "-1m"])
def test_bad_durations(text: str) -> None:
    import argparse

    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)
