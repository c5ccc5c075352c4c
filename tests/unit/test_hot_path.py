"""The admission hot path's shortcuts keep its rules: any Mapping is still read as one
(dict only takes a faster check), and the parsed-reference cache holds short strings only."""

from __future__ import annotations

from types import MappingProxyType

from webhook.model import resolution
from webhook.model.workloads import is_mapping, pod_images


def test_a_mapping_that_is_not_a_dict_is_still_read() -> None:
    container = MappingProxyType({"name": "web", "image": "keycloak:20.0"})
    pod = MappingProxyType({"spec": MappingProxyType({"containers": [container]})})
    assert is_mapping(pod) and is_mapping({}) and not is_mapping([("a", 1)])
    assert [i.image for i in pod_images(pod, "Pod")] == ["keycloak:20.0"]


def test_parsed_references_are_cached_for_short_strings_only() -> None:
    resolution._parsed.cache_clear()
    assert resolution.candidate("keycloak:20.0") is not None
    assert resolution.candidate("keycloak:20.0") is not None
    assert resolution._parsed.cache_info().hits == 1
    long_name = "a" * 600  # no reference: the name is at most 255 characters
    assert resolution.candidate(long_name) is None
    assert resolution._parsed.cache_info().currsize == 1  # not kept
    assert resolution.candidate("Not A Reference") is None  # cached as "none"
    assert resolution._parsed.cache_info().maxsize == 4096
