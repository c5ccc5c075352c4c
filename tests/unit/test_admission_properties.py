"""Property test: random pod specs and images never break admission.

For any pod spec (well-formed or not) and any mix of images: no exception, the patch
applies cleanly to the object, and admitting the patched object again changes nothing.
"""

from __future__ import annotations

import copy
import string

import jsonpatch
from hypothesis import given, settings
from hypothesis import strategies as st
from streamdata import DIGEST_A, DIGEST_B, decoded_patch, image_stream, index_of, review, workload

from webhook.model.workloads import POD_SPEC_PATHS
from webhook.serving.admission import review as admit

STREAMS = index_of(
    image_stream(
        "app", tags={"1": f"quay.io/x/app@{DIGEST_A}", "latest": f"app@{DIGEST_B}", "2": None}
    ),
    image_stream("db", local=False, tags={"1": f"quay.io/x/db@{DIGEST_A}"}),
)

names = st.sampled_from(["app", "db", "web", "App", "", "a" * 64])
tags = st.sampled_from(["", ":1", ":2", ":latest", ":nope", ":", ":-x"])
digests = st.sampled_from(["", "@" + DIGEST_A, "@sha256:abc"])
prefixes = st.sampled_from(["", "quay.io/x/", "localhost:5000/", "library/", "[::1]/"])
images = st.one_of(
    st.builds(lambda p, n, t, d: p + n + t + d, prefixes, names, tags, digests),
    st.text(alphabet=string.printable, max_size=40),
)
containers = st.lists(
    st.one_of(
        st.fixed_dictionaries({"name": st.text(max_size=5), "image": images}),
        st.fixed_dictionaries({"image": images}),
        st.fixed_dictionaries({"name": st.just("x"), "image": st.integers()}),
        st.none(),
    ),
    max_size=4,
)
pod_specs = st.fixed_dictionaries(
    {},
    optional={
        "containers": containers,
        "initContainers": containers,
        "ephemeralContainers": containers,
    },
)
annotations = st.sampled_from([{}, {"alpha.image.policy.openshift.io/resolve-names": "*"}])


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(sorted(POD_SPEC_PATHS)), spec=pod_specs, notes=annotations)
def test_patch_applies_and_second_pass_is_a_no_op(kind: str, spec: dict, notes: dict) -> None:
    obj = workload(kind, spec, annotations=notes)
    original = copy.deepcopy(obj)
    answer = admit(review(kind, obj), STREAMS)
    assert obj == original  # the input is never modified
    assert answer["response"]["allowed"] is True
    patch = decoded_patch(answer)
    assert all(op["op"] == "replace" and op["path"].endswith("/image") for op in patch)
    patched = jsonpatch.apply_patch(obj, patch)
    again = admit(review(kind, patched), STREAMS)
    assert decoded_patch(again) == []


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(sorted(POD_SPEC_PATHS)),
    body=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=10),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
        ),
        max_leaves=12,
    ),
)
def test_arbitrary_objects_are_allowed_without_error(kind: str, body: object) -> None:
    answer = admit(review(kind, {"metadata": {}, "spec": body, "template": body}), STREAMS)
    assert answer["response"]["allowed"] is True
