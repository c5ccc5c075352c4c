"""The registry client against a registry that misbehaves on purpose (hostile_registry.py).

Whatever the registry sends, each operation ends within a few read timeouts with a typed
RegistryError (never a ValueError, RecursionError or MemoryError), and the memory it costs is
bounded: the cases run in a child process whose peak RSS is measured, capped by an
address-space limit so that an unbounded read fails there instead of taking the machine.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from hostile_registry import HostileRegistry

from webhook.controller.importer import import_tag
from webhook.model.streams import parse_tag_reference
from webhook.registry.blobs import BlobClient
from webhook.registry.client import ClientConfig, Repository
from webhook.registry.errors import RegistryError
from webhook.tls.certs import write_certificates

READ_TIMEOUT = 1.0
BOUND = 6 * READ_TIMEOUT + 3  # the longest any one case may take (a token, then a retry)
REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def hostile() -> Iterator[HostileRegistry]:
    server = HostileRegistry().start()
    yield server
    server.stop()


def client_for(host: str) -> BlobClient:
    config = ClientConfig(
        allowed_registries=(host,),
        insecure_registries=(host,),
        connect_timeout=READ_TIMEOUT,
        read_timeout=READ_TIMEOUT,
        max_retry_wait=0.0,  # a 429 is not waited for here
    )
    return BlobClient(config)


def within_bound(call: Callable[[], Any]) -> Any:
    """`call()`'s result or exception, failing the test if it takes longer than BOUND."""
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["value"] = call()
        except BaseException as error:
            outcome["error"] = error

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(BOUND)
    assert not thread.is_alive(), f"still reading after {BOUND}s"
    if "error" in outcome:
        raise outcome["error"]
    return outcome.get("value")


# (mode, operation, what the message says)
CASES = [
    ("endless-token", "head", "more than 1048576 bytes"),
    ("drip-token", "head", "took longer than 1s"),
    ("gzip-token", "head", "more than 1048576 bytes"),
    ("endless", "get", "larger than 4194304 bytes"),
    ("drip", "get", "took longer than 1s"),
    ("endless-error", "get", "answered HTTP 404"),
    ("drip-error", "get", "answered HTTP 404"),
    ("drip-headers", "head", "did not answer in time"),
    ("huge-header", "head", "could not reach"),
    ("many-headers", "head", "could not reach"),
    ("redirect-loop", "get", "redirected more than 10 times"),
    ("nested", "get", "nested too deep"),
    ("huge-retry-after", "head", "rate limiting"),
]


@pytest.mark.parametrize(("mode", "operation", "message"), CASES, ids=[c[0] for c in CASES])
def test_misbehaviour_ends_in_a_typed_error_in_bounded_time(
    hostile: HostileRegistry, mode: str, operation: str, message: str
) -> None:
    repo = Repository(hostile.host, f"{mode}/app", insecure=True)
    with client_for(hostile.host) as client:
        if operation == "head":
            call: Callable[[], Any] = lambda: client.head_manifest(repo, "latest")  # noqa: E731
        else:
            call = lambda: client.get_manifest(repo, "latest")  # noqa: E731
        with pytest.raises(RegistryError) as raised:
            within_bound(call)
    assert message in raised.value.message
    if mode == "redirect-loop":
        assert hostile.requests[mode] <= 11  # the first request and 10 redirects


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hostile-tls")
    write_certificates(out, ["localhost"], ["127.0.0.1"])
    return out


TLS_CASES = [c for c in CASES if c[0] in ("endless-token", "drip-token", "drip", "drip-headers")]


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")
@pytest.mark.parametrize(("mode", "operation", "message"), TLS_CASES, ids=[c[0] for c in TLS_CASES])
def test_the_same_over_tls(tls_files: Path, mode: str, operation: str, message: str) -> None:
    """The deadlines shut TLS sockets down too (the reader is blocked in the TLS layer)."""
    server = HostileRegistry(tls=tls_files).start()
    try:
        repo = Repository(server.host, f"{mode}/app", insecure=True)  # unverified TLS
        with client_for(server.host) as client, pytest.raises(RegistryError) as raised:
            if operation == "head":
                within_bound(lambda: client.head_manifest(repo, "latest"))
            else:
                within_bound(lambda: client.get_manifest(repo, "latest"))
    finally:
        server.stop()
    if mode == "drip-headers":
        # HTTPS timed out, and HTTP (tried next for an insecure registry) is not spoken there.
        message = "could not reach"
    assert message in raised.value.message


def test_a_redirect_is_followed_without_reading_its_body(hostile: HostileRegistry) -> None:
    repo = Repository(hostile.host, "redirect-endless/app", insecure=True)
    with client_for(hostile.host) as client:
        manifest = within_bound(lambda: client.get_manifest(repo, "latest"))
    assert manifest.media_type == "application/vnd.oci.image.manifest.v1+json"


def test_a_content_length_too_long_to_parse_is_just_large(hostile: HostileRegistry) -> None:
    repo = Repository(hostile.host, "huge-length/app", insecure=True)
    with client_for(hostile.host) as client:
        head = within_bound(lambda: client.head_manifest(repo, "latest"))
    assert head.size is not None and head.size > 10**15


@pytest.mark.parametrize("probe", ["endless", "drip"])
def test_the_v2_probe_is_bounded(probe: str) -> None:
    server = HostileRegistry(probe=probe).start()
    try:
        repo = Repository(server.host, "fine/app", insecure=True)
        with client_for(server.host) as client, pytest.raises(RegistryError) as raised:
            within_bound(lambda: client.head_blob(repo, "sha256:" + "0" * 64))
    finally:
        server.stop()
    assert "GET" in raised.value.message and "/v2/" in raised.value.message


# --- memory, in a child process -----------------------------------------------------------

MEMORY_LIMIT = 1024 * 1024 * 1024  # address space of the child: an unbounded read dies here
RSS_GOAL_MIB = 128  # half the controller's memory limit (256Mi)

CHILD = """
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
from webhook.registry.blobs import BlobClient
from webhook.registry.client import ClientConfig, Repository
from webhook.registry.errors import RegistryError
from webhook.tls.certs import write_certificates

host = sys.argv[1]
config = ClientConfig(allowed_registries=(host,), insecure_registries=(host,),
                      connect_timeout=2.0, read_timeout=3.0)
outcomes = {{}}
for mode, call in [
    ("endless-token", lambda client, repo: client.head_manifest(repo, "latest")),
    ("gzip-token", lambda client, repo: client.head_manifest(repo, "latest")),
    ("endless", lambda client, repo: client.get_manifest(repo, "latest")),
    ("endless-error", lambda client, repo: client.get_manifest(repo, "latest")),
    ("redirect-endless", lambda client, repo: client.get_manifest(repo, "latest")),
]:
    started = time.monotonic()
    try:
        # A client each: a client remembers the token realm a host sent last.
        call(BlobClient(config), Repository(host, mode + "/app", insecure=True))
        outcome = "ok"
    except RegistryError as error:
        outcome = error.message[:120]
    except MemoryError:
        outcome = "MemoryError"
    outcomes[mode] = [outcome, round(time.monotonic() - started, 2)]
# VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the parent across exec.
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({{"peak_mib": round(peak_kib / 1024, 1), "outcomes": outcomes}}))
"""


def test_memory_stays_bounded_whatever_the_registry_sends(hostile: HostileRegistry) -> None:
    try:
        done = subprocess.run(
            [sys.executable, "-c", CHILD.format(limit=MEMORY_LIMIT), hostile.host],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=REPO_ROOT,
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the client was still reading after 60s")
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"\nhostile registry, client peak RSS {report['peak_mib']} MiB: {report['outcomes']}")
    assert report["peak_mib"] < RSS_GOAL_MIB
    assert "MemoryError" not in json.dumps(report["outcomes"])


# (mode, the ImportSuccess reason, what the message says)
REASON_CASES = [
    ("rate-limited", "RateLimited", "answered HTTP 429"),
    ("hang", "Timeout", "did not answer in time"),
    ("drip", "Timeout", "took longer than 1s"),
    ("drip-token", "Timeout", "took longer than 1s"),
    ("endless", "InternalError", "larger than 4194304 bytes"),
    ("endless-error", "NotFound", "answered HTTP 404"),
]


@pytest.mark.parametrize(
    ("mode", "reason", "message"), REASON_CASES, ids=[c[0] for c in REASON_CASES]
)
def test_an_import_names_what_went_wrong(
    hostile: HostileRegistry, mode: str, reason: str, message: str
) -> None:
    """The tag's condition says RateLimited for a registry that throttles and Timeout for one
    that hangs, not InternalError for both (issue 15, item 10)."""
    tag = parse_tag_reference(
        {"name": "t", "from": {"kind": "DockerImage", "name": f"{hostile.host}/{mode}/app:1"}}
    )
    with client_for(hostile.host) as client:
        result = within_bound(
            lambda: import_tag(tag, namespace="team", stream="app", client=client, generation=1)
        )
    assert result.reason == reason
    assert message in result.condition["message"]
    if mode == "rate-limited":
        assert result.retry_after == 7.0  # the controller's backoff waits at least that long
