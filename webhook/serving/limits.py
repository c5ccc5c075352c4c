"""How much one answer to the API server may carry, whatever the request held.

Warnings follow the API server's own rules (k8s.io/apiserver, pkg/endpoints/filters/
warning.go, and k8s.io/apimachinery util/net NewWarningHeader): it keeps 4096 characters of
warning text per request; past that it cuts every warning to 256 characters and drops what
no longer fits; a warning that holds a control character is dropped whole; duplicates are
dropped. Applying the same rules before answering keeps an answer as small as what a user
can ever see, and saves warnings with a line break in them (a container name may hold one).

A denial lists a bounded number of violations, and the audit annotation a bounded number
of records: both say how many more there were.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

WARNINGS_TOTAL = 4096  # characters of warning text the API server keeps per request
WARNING_ITEM = 256  # characters it cuts each warning to once the total is exceeded
DENIAL_VIOLATIONS = 10  # violations a denial message spells out
AUDIT_RECORDS = 20  # violation records in the audit annotation

# unicode.IsControl: C0, DEL and C1.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def shorten(text: str, limit: int) -> str:
    """`text`, cut to `limit` characters with an ellipsis when it is longer."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


def warnings(texts: Iterable[str]) -> list[str]:
    """The warnings as the API server would show them (see the module docstring), with a
    last line counting those that did not fit."""
    kept: list[str] = []
    seen: set[str] = set()
    total = 0
    for text in texts:
        text = _CONTROL.sub(" ", text)
        if text and text not in seen:
            seen.add(text)
            kept.append(text)
            total += len(text)
    if total <= WARNINGS_TOTAL:
        return kept
    room = WARNINGS_TOTAL // WARNING_ITEM - 1  # the last place is for the count
    shown = [shorten(text, WARNING_ITEM) for text in kept[:room]]
    if len(kept) > room:
        shown.append(f"{len(kept) - room} more warning(s) not shown")
    return shown
