"""Figures 3 and 4, in-process: the cost of resolving one AdmissionReview, and of the index.

Figure 3 times (in CPU time) `admission.review` (parse, find images, look up, patch,
answer) on parsed bodies, and the same with the JSON decoding and encoding that /mutate
adds, at several index sizes. Each timing is the median of several batches over a pool of
bodies whose short names point at random streams all over the index, so lookups are not
served from one hot entry.

Figure 4 loads streams in a fresh interpreter (`python -m bench.inproc memory ...`) and
reads its RSS before and after: the index's cost per 10,000 streams.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import median
from typing import Any

import jsonpatch

from bench import data, machine
from webhook.kube.policy_cache import PolicyIndex, StreamImages
from webhook.serving import admission
from webhook.serving.stream_index import StreamIndex
from webhook.serving.validation import answer


def time_per_call(fn: Any, items: Sequence[Any], min_seconds: float, batches: int) -> float:
    """Median over `batches` of the mean seconds per call of `fn(item)` over `items`.

    Seconds of this thread's CPU time, not wall time: on a shared machine other processes
    take the CPU away for a while, which wall time would count and CPU time does not.
    """
    for item in items:  # warm up
        fn(item)
    per_batch = max(min_seconds / batches, 1e-3)
    results = []
    for _ in range(batches):
        calls = 0
        started = time.thread_time()
        while True:
            for item in items:
                fn(item)
            calls += len(items)
            elapsed = time.thread_time() - started
            if elapsed >= per_batch:
                break
        results.append(elapsed / calls)
    return median(results)


def bench_resolution(
    sizes: Sequence[int],
    *,
    tags: int = 5,
    pool: int = 300,
    seconds: float = 1.0,
    batches: int = 5,
    log: Any = print,
) -> dict[str, Any]:
    rows = []
    for size in sizes:
        started = time.perf_counter()
        index = StreamIndex()
        index.replace_all(data.image_streams(size, tags=tags))  # a generator: no copy kept
        build = time.perf_counter() - started
        bodies = data.reviews(pool, size)
        raw = [data.encode(b) for b in bodies]
        answers = [admission.review(b, index) for b in bodies]
        if not all(a["response"].get("patch") for a in answers):
            raise RuntimeError(f"a review did not resolve at {size} streams")

        def pure(body: Any, index: StreamIndex = index) -> Any:
            return admission.review(body, index)

        def with_json(body: bytes, index: StreamIndex = index) -> Any:
            return json.dumps(admission.review(json.loads(body), index)).encode()

        def lookup_only(key: tuple[str, str], index: StreamIndex = index) -> Any:
            return index.get(*key)

        policies = policy_index(index, size, tags)
        finals = [final_request(b, index) for b in bodies]

        def validated(request: Any, policies: PolicyIndex = policies) -> Any:
            return answer(request, policies)

        keys = [(data.namespace_of(i, size), data.stream_name(i)) for i in range(0, size, 7)]
        by_kind = {}
        for kind in data.SHAPES:
            subset = [b for b in bodies if b["request"]["kind"]["kind"] == kind]
            by_kind[kind] = round(time_per_call(pure, subset, seconds / 3, batches) * 1e6, 1)
        row: dict[str, Any] = {
            "streams": size,
            "index_build_s": round(build, 2),
            "review_us": round(time_per_call(pure, bodies, seconds, batches) * 1e6, 1),
            "review_json_us": round(time_per_call(with_json, raw, seconds, batches) * 1e6, 1),
            "validate_us": round(time_per_call(validated, finals, seconds, batches) * 1e6, 1),
            "lookup_us": round(time_per_call(lookup_only, keys[:5000], 0.2, batches) * 1e6, 3),
            "review_us_by_kind": by_kind,
        }
        log(
            f"  {size} streams: {row['review_us']} µs/review, {row['review_json_us']} µs with "
            f"JSON, /validate {row['validate_us']} µs (3 policies), lookup {row['lookup_us']} µs "
            f"(index built in {row['index_build_s']} s)"
        )
        rows.append(row)
        del index, bodies, raw, answers, policies, finals
        gc.collect()
    first, last = rows[0]["review_us"], rows[-1]["review_us"]
    return {
        "pool": pool,
        "mix": "Deployment (3 containers + 1 init), Pod (2), CronJob (1), in turn",
        "rows": rows,
        "growth_smallest_to_largest": round(last / first, 2) if first else None,
    }


# Three policies selecting every namespace, one per mode, as a platform team might run.
POLICIES = [
    ("require-streams", "Enforce", {"requireImageStream": True}),
    ("require-digests", "Warn", {"requireDigest": True}),
    ("trusted-registries", "Audit", {"allowedRegistries": ["quay.io/", "registry.example.com"]}),
]


def policy_index(index: StreamIndex, size: int, tags: int) -> PolicyIndex:
    """The validating path's caches over the same streams: policies, namespaces, images."""
    images = StreamImages()
    images.replace_all(data.image_streams(size, tags=tags))
    policies = PolicyIndex(index, images)
    policies.policies.replace_all(
        {
            "apiVersion": "imagestreams.io/v1alpha1",
            "kind": "ImagePolicy",
            "metadata": {"name": name},
            "spec": {"namespaceSelector": {}, "mode": mode, "rules": rules},
        }
        for name, mode, rules in POLICIES
    )
    names = {data.namespace_of(i, size) for i in range(size)}
    policies.namespaces.replace_all(
        {"metadata": {"name": n, "labels": {"kubernetes.io/metadata.name": n}}} for n in names
    )
    return policies


def final_request(body: Mapping[str, Any], index: StreamIndex) -> Mapping[str, Any]:
    """The request /validate sees: the object after /mutate's patch was applied."""
    request = body["request"]
    patch = admission.mutate(request, index).patch
    return {**request, "object": jsonpatch.apply_patch(request["object"], patch)}


# --- figure 4: memory, in a fresh interpreter ---------------------------------------------


def _measure_memory(streams: int, tags: int, history: int, mode: str, path: str) -> dict[str, Any]:
    """Runs in the child: RSS before and after building the index."""
    import tracemalloc

    gc.collect()
    before = machine.rss_kib()
    hwm_before = machine.rss_kib(field="VmHWM")
    if mode == "tracemalloc":
        tracemalloc.start()
    if mode == "file":
        from webhook.serving.stream_index import file_index

        started = time.perf_counter()
        index = file_index(path)
    else:
        started = time.perf_counter()
        index = StreamIndex()
        index.replace_all(data.image_streams(streams, tags=tags, history=history))
    seconds = time.perf_counter() - started
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] if mode == "tracemalloc" else 0
    after = machine.rss_kib()
    return {
        "mode": mode,
        "streams": len(index),
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_delta_kib": after - before,
        "peak_delta_kib": machine.rss_kib(field="VmHWM") - hwm_before,
        "traced_kib": traced // 1024,
        "load_s": round(seconds, 2),
    }


def bench_memory(
    streams: int = 10_000, tags: int = 5, history: int = 3, log: Any = print
) -> dict[str, Any]:
    """Index memory of `streams` x `tags` x `history`, scaled to 10,000 streams."""
    import tempfile

    out: dict[str, Any] = {"streams": streams, "tags": tags, "history": history}
    scale = 10_000 / streams
    with tempfile.TemporaryDirectory(prefix="imagestreams-bench-") as tmp:
        path = data.write_streams_file(
            Path(tmp) / "streams.json", streams, tags=tags, history=history
        )
        out["file_mib"] = round(path.stat().st_size / 2**20, 1)
        for mode in ("index", "tracemalloc", "file"):
            cmd = [sys.executable, "-m", "bench.inproc", "memory", mode]
            cmd += [str(streams), str(tags), str(history), str(path)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=600)
            out[mode] = json.loads(proc.stdout)
    out["index_rss_mib_per_10k"] = round(out["index"]["rss_delta_kib"] / 1024 * scale, 1)
    out["index_traced_mib_per_10k"] = round(out["tracemalloc"]["traced_kib"] / 1024 * scale, 1)
    out["file_load_rss_mib_per_10k"] = round(out["file"]["rss_delta_kib"] / 1024 * scale, 1)
    out["file_load_peak_mib_per_10k"] = round(out["file"]["peak_delta_kib"] / 1024 * scale, 1)
    log(
        f"  index: {out['index_rss_mib_per_10k']} MiB RSS per 10k streams "
        f"({out['index_traced_mib_per_10k']} MiB traced); loading from a file: "
        f"{out['file_load_rss_mib_per_10k']} MiB kept, {out['file_load_peak_mib_per_10k']} MiB peak"
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.inproc")
    sub = parser.add_subparsers(dest="what", required=True)
    m = sub.add_parser("memory", help="(internal) measure one index load in this process")
    m.add_argument("mode", choices=["index", "tracemalloc", "file"])
    m.add_argument("streams", type=int)
    m.add_argument("tags", type=int)
    m.add_argument("history", type=int)
    m.add_argument("path")
    args = parser.parse_args(argv)
    print(json.dumps(_measure_memory(args.streams, args.tags, args.history, args.mode, args.path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
