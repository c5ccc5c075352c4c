"""Registry answers shared by the scheduled checks of streams that follow the same tag.

Streams in many namespaces often follow the same few upstream tags (every team's stream of
ubi9 or nginx; the same chart installed in fifty namespaces). A scheduled check asks the
registry whether a tag moved; the answer another stream's check got for the same question,
with the same credentials, moments ago says the same, and the registry (and its rate limit)
need not hear the question again.

Moments ago means within `window` seconds: the controller uses the scheduled checks' jitter
(SCHEDULE_JITTER of the interval, 3 minutes of 15), by which a check may come early anyway,
so a shared answer is never older than a check could have been. Only scheduled checks read
shared answers: a new or edited tag, `import-image` and a retry always ask the registry.

An answer is shared only between requests that would go out identically: the same registry
as written, repository, reference, insecure flag and credential identity (the username and a
hash of the password, `credentials.identity`). A stream whose namespace holds no credentials
for a registry may see what anonymous access answered for another namespace, which it could
ask itself; credentials are never shared, and neither is what they answered.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from webhook.controller.importer import ManifestSource
from webhook.registry.client import ManifestHead, Repository
from webhook.registry.credentials import identity
from webhook.registry.manifests import Manifest

AnswerKey = tuple[str, str, bool, str, str]  # registry, path, insecure, identity, reference

# Drop expired answers once this many are held: more are only kept when they are that many
# different questions within one window.
PRUNE_AT = 4096


def answer_key(repo: Repository, reference: str) -> AnswerKey:
    return (repo.registry, repo.path, repo.insecure, identity(repo.credential), reference)


class SharedAnswers:
    """A ManifestSource (for `importer.import_tag`) over `source`, answering a manifest HEAD
        from an answer to the same question at most `window` seconds old; every fetched manifest
        leaves its digest as such an answer. `before_asking(repo)` runs before each question
    that goes to the registry (the controller's rate limits). Thread-safe."""

    def __init__(
        self,
        source: ManifestSource,
        window: float,
        clock: Callable[[], float] = time.monotonic,
        *,
        before_asking: Callable[[Repository], object] | None = None,
    ) -> None:
        self._source = source
        self._before_asking = before_asking  # the rate limits: only a question asked waits
        self.window = window
        self._clock = clock
        self._lock = threading.Lock()
        self._heads: dict[AnswerKey, tuple[float, ManifestHead]] = {}
        self.shared = 0  # answers given without asking the registry

    def head_manifest(self, repo: Repository, reference: str) -> ManifestHead:
        key = answer_key(repo, reference)
        with self._lock:
            kept = self._heads.get(key)
        if kept is not None and self._clock() - kept[0] <= self.window:
            with self._lock:
                self.shared += 1
            return kept[1]
        self._asking(repo)
        head = self._source.head_manifest(repo, reference)
        if head.digest:  # one without a digest makes the importer GET: nothing to share
            self._remember(key, head)
        return head

    def get_manifest(self, repo: Repository, reference: str) -> Manifest:
        self._asking(repo)
        manifest = self._source.get_manifest(repo, reference)
        head = ManifestHead(manifest.digest, manifest.media_type, None)
        self._remember(answer_key(repo, reference), head)
        return manifest

    def _asking(self, repo: Repository) -> None:
        if self._before_asking is not None:
            self._before_asking(repo)

    def __len__(self) -> int:
        return len(self._heads)

    def _remember(self, key: AnswerKey, head: ManifestHead) -> None:
        now = self._clock()
        with self._lock:
            if len(self._heads) >= PRUNE_AT:
                oldest = now - self.window
                self._heads = {k: v for k, v in self._heads.items() if v[0] >= oldest}
            self._heads[key] = (now, head)
