"""The ImageStream CRD: structural, complete, and accepting what OpenShift accepts.

The CRD's openAPIV3Schema is translated to JSON Schema and run with `jsonschema` the way
kube-apiserver applies it to `kubectl apply` (strict field validation, the kubectl
default): nulls in non-nullable fields are dropped or defaulted first as the server's
decoder does, `nullable` allows null, unknown fields are errors, list-map keys are unique,
`date-time` is parsed leniently, names are DNS subdomains. (Checked once against a real
kube-apiserver v1.34: same verdict on the whole corpus and on every case below.) Every
ImageStream of the corpus fixtures must pass; when the full corpus is next to the checkout
(../shared), all of it must pass too.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for tests/corpus.py
import corpus

REPO_ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = REPO_ROOT / "charts" / "imagestreams" / "files" / "crds" / "imagestreams.yaml"

# The full corpus, per its README.
FULL_CORPUS_STREAMS = 532
FULL_CORPUS_SPEC_TAGS = 3170

# Every keyword of apiextensions.k8s.io/v1 JSONSchemaProps.
SCHEMA_KEYWORDS = frozenset(
    {
        "description",
        "type",
        "format",
        "title",
        "default",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "multipleOf",
        "enum",
        "maxProperties",
        "minProperties",
        "required",
        "items",
        "allOf",
        "oneOf",
        "anyOf",
        "not",
        "properties",
        "additionalProperties",
        "externalDocs",
        "example",
        "nullable",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
        "x-kubernetes-validations",
    }
)
# JSONSchemaProps has these, but a v1 CRD with them is rejected.
FORBIDDEN_KEYWORDS = frozenset(
    {"$ref", "$schema", "id", "definitions", "dependencies", "patternProperties", "additionalItems"}
)
# Inside allOf/anyOf/oneOf/not a structural schema carries value validations only.
JUNCTOR_FORBIDDEN = frozenset(
    {
        "type",
        "description",
        "default",
        "nullable",
        "additionalProperties",
        "x-kubernetes-preserve-unknown-fields",
        "x-kubernetes-embedded-resource",
        "x-kubernetes-int-or-string",
        "x-kubernetes-list-map-keys",
        "x-kubernetes-list-type",
        "x-kubernetes-map-type",
    }
)
SCALAR_TYPES = frozenset({"string", "integer", "number", "boolean"})
JSON_TYPES = {
    "object": dict,
    "array": list,
    "string": str,
    "integer": int,
    "number": (int, float),
    "boolean": bool,
}


# --- loading and translating the schema -------------------------------------------------


def load_crd() -> dict[str, Any]:
    documents = [d for d in yaml.safe_load_all(CRD_PATH.read_text(encoding="utf-8")) if d]
    assert len(documents) == 1, "the CRD file must hold exactly one document"
    return documents[0]


CRD = load_crd()
VERSION = CRD["spec"]["versions"][0]
SCHEMA = VERSION["schema"]["openAPIV3Schema"]


def to_json_schema(node: dict[str, Any]) -> dict[str, Any]:
    """One CRD schema node as JSON Schema (draft 4, the dialect OpenAPI v3 builds on)."""
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key.startswith("x-kubernetes-") or key in ("nullable", "default", "example"):
            continue
        if key == "properties":
            out[key] = {name: to_json_schema(sub) for name, sub in value.items()}
        elif key in ("items", "not") or (key == "additionalProperties" and isinstance(value, dict)):
            out[key] = to_json_schema(value)
        elif key in ("allOf", "anyOf", "oneOf"):
            out[key] = [to_json_schema(sub) for sub in value]
        else:
            out[key] = value
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
        if "enum" in out:
            out["enum"] = [*out["enum"], None]
    # kubectl's default --validate=strict makes the server reject unknown fields.
    if (
        "properties" in node
        and "additionalProperties" not in node
        and not node.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


FORMATS = jsonschema.FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _is_date_time(value: object) -> bool:
    # Lenient like kube-openapi's strfmt: RFC 3339 with or without fractions or zone.
    return not isinstance(value, str) or bool(datetime.fromisoformat(value))


VALIDATOR = jsonschema.Draft4Validator(to_json_schema(SCHEMA), format_checker=FORMATS)


def list_map_duplicates(node: dict[str, Any], value: Any, path: str) -> Iterator[str]:
    """Duplicate keys in x-kubernetes-list-type: map lists (the server rejects them)."""
    if value is None:
        return
    if node.get("type") == "object" and isinstance(value, dict):
        for name, sub in (node.get("properties") or {}).items():
            if name in value:
                yield from list_map_duplicates(sub, value[name], f"{path}.{name}")
        extra = node.get("additionalProperties")
        if isinstance(extra, dict):
            for name, item in value.items():
                yield from list_map_duplicates(extra, item, f"{path}.{name}")
    elif node.get("type") == "array" and isinstance(value, list):
        keys = node.get("x-kubernetes-list-map-keys")
        seen: set[tuple[Any, ...]] = set()
        for i, item in enumerate(value):
            if keys and isinstance(item, dict):
                key = tuple(json.dumps(item.get(k)) for k in keys)
                if key in seen:
                    entry = dict(zip(keys, key, strict=True))
                    yield f"{path}[{i}]: duplicate entry for key {entry}"
                seen.add(key)
            yield from list_map_duplicates(node["items"], item, f"{path}[{i}]")


def decoded(value: Any, node: dict[str, Any] | None) -> Any:
    """The document as the API server decodes it before validating: a null in a
    non-nullable field is removed, or replaced by the field's default
    (PruneNonNullableNullsWithoutDefaults), then absent fields with a default get it.
    Nulls in nullable fields stay and are stored."""
    if isinstance(value, dict):
        properties = (node or {}).get("properties") or {}
        extra = (node or {}).get("additionalProperties")
        out = {}
        for name, item in value.items():
            sub = properties.get(name, extra if isinstance(extra, dict) else None)
            if item is None and sub is not None and not sub.get("nullable"):
                if "default" not in sub:
                    continue
                item = copy.deepcopy(sub["default"])
            out[name] = decoded(item, sub)
        for name, sub in properties.items():
            if name not in out and "default" in sub:
                out[name] = decoded(copy.deepcopy(sub["default"]), sub)
        return out
    if isinstance(value, list):
        items = (node or {}).get("items")
        return [decoded(item, items) for item in value]
    return value


DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def schema_errors(document: dict[str, Any]) -> list[str]:
    """Why the API server would refuse this document ([] when it would accept it)."""
    document = decoded(document, SCHEMA)
    errors = [
        f"{'.'.join(str(p) for p in e.absolute_path) or '<root>'}: {e.message}"
        for e in VALIDATOR.iter_errors(document)
    ]
    errors.extend(list_map_duplicates(SCHEMA, document, ""))
    # ObjectMeta validation for custom resources: the name is a DNS subdomain.
    name = (document.get("metadata") or {}).get("name")
    if name is not None and not (len(name) <= 253 and DNS_SUBDOMAIN.match(name)):
        errors.append(f"metadata.name: {name!r} is not a DNS subdomain")
    return errors


# --- the CRD itself -----------------------------------------------------------------------


def has_type(value: object, type_name: str) -> bool:
    """Whether a JSON value is of an OpenAPI type (booleans are not numbers)."""
    expected = JSON_TYPES.get(type_name)
    if expected is None:
        return True
    if isinstance(value, bool):
        return type_name == "boolean"
    return isinstance(value, expected)


def walk(node: dict[str, Any], path: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema node below and including node, with a readable path."""
    yield path or "<root>", node
    for name, sub in (node.get("properties") or {}).items():
        yield from walk(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from walk(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from walk(node["additionalProperties"], f"{path}{{}}")


def structural_problems(schema: dict[str, Any]) -> list[str]:
    problems = []
    if schema.get("type") != "object":
        problems.append("<root>: type must be object")
    for path, node in walk(schema):
        unknown = set(node) - SCHEMA_KEYWORDS - FORBIDDEN_KEYWORDS
        if unknown:
            problems.append(f"{path}: unknown keywords {sorted(unknown)}")
        if set(node) & FORBIDDEN_KEYWORDS:
            problems.append(f"{path}: forbidden keywords {sorted(set(node) & FORBIDDEN_KEYWORDS)}")
        if node.get("uniqueItems"):
            problems.append(f"{path}: uniqueItems: true is forbidden")
        if not node.get("type") and not (
            node.get("x-kubernetes-int-or-string")
            or node.get("x-kubernetes-preserve-unknown-fields")
        ):
            problems.append(f"{path}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: properties and additionalProperties together")
        if "additionalProperties" in node and not isinstance(node["additionalProperties"], dict):
            problems.append(f"{path}: additionalProperties must be a schema")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{path}: array without an items schema")
        if node.get("type") != "object" and ("properties" in node or "required" in node):
            problems.append(f"{path}: properties/required on a non-object")
        for name in node.get("required", []):
            if name not in (node.get("properties") or {}):
                problems.append(f"{path}: required {name!r} is not a property")
        for junctor in ("allOf", "anyOf", "oneOf", "not"):
            subs = node.get(junctor, [])
            for sub in subs if isinstance(subs, list) else [subs]:
                for _, inner in walk(sub):
                    if set(inner) & JUNCTOR_FORBIDDEN:
                        problems.append(f"{path}: {junctor} sets {set(inner) & JUNCTOR_FORBIDDEN}")
        for value in node.get("enum", []):
            if not has_type(value, node.get("type", "")):
                problems.append(f"{path}: enum value {value!r} is not a {node.get('type')}")
        if "default" in node:
            node_validator = jsonschema.Draft4Validator(to_json_schema(node))
            errors = list(node_validator.iter_errors(node["default"]))
            if errors:
                problems.append(f"{path}: default {node['default']!r} invalid: {errors[0].message}")
        if "x-kubernetes-map-type" in node and node.get("type") != "object":
            problems.append(f"{path}: x-kubernetes-map-type on a non-object")
        list_type = node.get("x-kubernetes-list-type")
        if list_type and node.get("type") != "array":
            problems.append(f"{path}: x-kubernetes-list-type on a non-array")
        if "x-kubernetes-list-map-keys" in node and list_type != "map":
            problems.append(f"{path}: list-map-keys without x-kubernetes-list-type: map")
        if list_type == "map":
            items = node.get("items") or {}
            if items.get("type") != "object" or items.get("nullable"):
                problems.append(f"{path}: list-map items must be non-nullable objects")
            keys = node.get("x-kubernetes-list-map-keys") or []
            if not keys:
                problems.append(f"{path}: list-map without keys")
            for key in keys:
                prop = (items.get("properties") or {}).get(key)
                if prop is None or prop.get("type") not in SCALAR_TYPES:
                    problems.append(f"{path}: list-map key {key!r} must be a scalar property")
                elif key not in items.get("required", []) and "default" not in prop:
                    problems.append(f"{path}: list-map key {key!r} must be required or defaulted")
        if list_type == "set" and (node.get("items") or {}).get("type") not in SCALAR_TYPES:
            problems.append(f"{path}: list-set items must be scalars")
    # metadata is special only at the root: just type object (and name restrictions).
    metadata = schema.get("properties", {}).get("metadata", {})
    if set(metadata) - {"type", "properties"} or metadata.get("type") != "object":
        problems.append(".metadata: may only be {type: object} with name restrictions")
    if set(metadata.get("properties", {})) - {"name", "generateName"}:
        problems.append(".metadata: may restrict only name and generateName")
    return problems


def test_schema_is_structural() -> None:
    assert structural_problems(SCHEMA) == []


def test_structural_check_can_fail() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"description": "no type"},
            "b": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
            "c": {"$ref": "#/definitions/x", "type": "string"},
            "d": {"type": "array", "items": {"type": "string"}, "x-kubernetes-list-type": "map"},
            "e": {"type": "string", "enum": ["x", 1], "default": 3},
        },
    }
    problems = "\n".join(structural_problems(bad))
    for expected in (
        ".a: no type",
        ".b: properties and additionalProperties",
        ".c: forbidden keywords ['$ref']",
        ".d: list-map items",
        ".e: enum value 1",
        ".e: default 3",
    ):
        assert expected in problems


def test_crd_identity() -> None:
    assert CRD["apiVersion"] == "apiextensions.k8s.io/v1"
    assert CRD["kind"] == "CustomResourceDefinition"
    spec = CRD["spec"]
    assert CRD["metadata"]["name"] == "imagestreams.image.openshift.io"
    assert spec["group"] == "image.openshift.io"
    assert spec["scope"] == "Namespaced"
    assert spec["names"] == {
        "kind": "ImageStream",
        "listKind": "ImageStreamList",
        "plural": "imagestreams",
        "singular": "imagestream",
        "shortNames": ["is"],
    }
    assert "all" not in spec["names"].get("categories", [])
    assert [v["name"] for v in spec["versions"]] == ["v1"]
    assert VERSION["served"] is True
    assert VERSION["storage"] is True
    assert VERSION["subresources"] == {"status": {}}


def schema_at(json_path: str) -> dict[str, Any] | None:
    """The schema node a simple printer-column jsonPath (`.a.b[0].c`, `[*]`) points at."""
    node: dict[str, Any] | None = SCHEMA
    for part in json_path.strip(".").replace("[", ".[").split("."):
        if node is None:
            return None
        if part.startswith("["):
            node = node.get("items") if node.get("type") == "array" else None
        else:
            node = (node.get("properties") or {}).get(part)
    return node


def test_printer_columns() -> None:
    columns = {c["name"]: c for c in VERSION["additionalPrinterColumns"]}
    assert list(columns) == ["Image Repository", "Tags", "Updated"]
    assert columns["Image Repository"]["jsonPath"] == ".status.dockerImageRepository"
    assert columns["Tags"]["jsonPath"] == ".status.tags[*].tag"
    assert columns["Updated"]["jsonPath"] == ".status.tags[0].items[0].created"
    assert columns["Updated"]["type"] == "date"
    for column in columns.values():
        assert column["type"] in ("string", "integer", "number", "boolean", "date")
        target = schema_at(column["jsonPath"])
        assert target is not None, f"{column['jsonPath']} is not a field of the schema"
        assert target["type"] == "string"


def test_list_maps_and_nullable_fields() -> None:
    tags = schema_at(".spec.tags")
    assert tags is not None
    assert tags["x-kubernetes-list-type"] == "map"
    assert tags["x-kubernetes-list-map-keys"] == ["name"]
    assert "name" in tags["items"]["required"]
    history = schema_at(".status.tags")
    assert history is not None
    assert history["x-kubernetes-list-type"] == "map"
    assert history["x-kubernetes-list-map-keys"] == ["tag"]
    assert "tag" in history["items"]["required"]
    nullable = sorted(path for path, node in walk(SCHEMA) if node.get("nullable"))
    assert nullable == [
        ".spec.tags[].annotations",
        ".spec.tags[].generation",
        ".status.tags[].conditions[].lastTransitionTime",
        ".status.tags[].items",
        ".status.tags[].items[].created",
    ]


def test_every_field_has_a_description() -> None:
    undocumented = [
        path
        for path, node in walk(SCHEMA)
        if path not in ("<root>", ".metadata")
        and not path.endswith(("{}", "platforms[]"))
        and not node.get("description")
    ]
    assert undocumented == []


def test_has_every_openshift_field() -> None:
    """The fields of openshift/api image/v1 ImageStream, TagReference, TagEvent and so on."""
    expected = {
        ".spec": {"lookupPolicy", "dockerImageRepository", "tags"},
        ".spec.lookupPolicy": {"local"},
        ".spec.tags[]": {
            "name",
            "annotations",
            "from",
            "reference",
            "generation",
            "importPolicy",
            "referencePolicy",
        },
        ".spec.tags[].from": {
            "kind",
            "namespace",
            "name",
            "uid",
            "apiVersion",
            "resourceVersion",
            "fieldPath",
        },
        ".spec.tags[].importPolicy": {"insecure", "scheduled", "importMode"},
        ".spec.tags[].referencePolicy": {"type"},
        ".status": {"dockerImageRepository", "publicDockerImageRepository", "tags"},
        ".status.tags[]": {"tag", "items", "conditions"},
        ".status.tags[].items[]": {
            "created",
            "dockerImageReference",
            "image",
            "generation",
            "platforms",
        },
        ".status.tags[].conditions[]": {
            "type",
            "status",
            "lastTransitionTime",
            "reason",
            "message",
            "generation",
        },
    }
    nodes = dict(walk(SCHEMA))
    for path, fields in expected.items():
        assert set(nodes[path]["properties"]) == fields, path


def test_enums_and_defaults() -> None:
    assert schema_at(".spec.tags[].from.kind")["enum"] == [  # type: ignore[index]
        "DockerImage",
        "ImageStreamTag",
        "ImageStreamImage",
    ]
    import_mode = schema_at(".spec.tags[].importPolicy.importMode")
    assert import_mode is not None
    assert import_mode["enum"] == ["", "Legacy", "PreserveOriginal"]
    assert "default" not in import_mode  # our importer's default is not OpenShift's
    reference_type = schema_at(".spec.tags[].referencePolicy.type")
    assert reference_type is not None
    assert reference_type["enum"] == ["", "Source", "Local"]
    assert reference_type["default"] == "Source"
    status = schema_at(".status.tags[].conditions[].status")
    assert status is not None
    assert status["enum"] == ["True", "False", "Unknown"]


# --- documents against the schema ---------------------------------------------------------


def corpus_cases(root: Path) -> list[Any]:
    cases = []
    per_file: dict[Path, int] = {}
    for path, stream in corpus.iter_image_streams(root):
        n = per_file[path] = per_file.get(path, -1) + 1
        case_id = f"{path.relative_to(root)}#{n}"
        cases.append(pytest.param(stream, id=case_id))
    return cases


FIXTURE_CASES = corpus_cases(corpus.FIXTURE_CORPUS)


def test_fixture_corpus_is_present() -> None:
    assert len(FIXTURE_CASES) >= 30
    assert (corpus.FIXTURE_CORPUS / "LICENSE").is_file()
    assert (corpus.FIXTURE_CORPUS / "README.md").is_file()


@pytest.mark.parametrize("stream", FIXTURE_CASES)
def test_fixture_stream_is_accepted(stream: dict[str, Any]) -> None:
    assert stream["apiVersion"] in corpus.IMAGESTREAM_API_VERSIONS
    assert schema_errors(stream) == []


def test_full_corpus_is_accepted() -> None:
    root = corpus.SHARED_CORPUS
    if not root.is_dir():
        pytest.skip(f"full corpus not present at {root} (only the fixture subset is checked)")
    failures = []
    streams = tags = 0
    for path, stream in corpus.iter_image_streams(root):
        streams += 1
        tags += len(corpus.spec_tags(stream))
        where = path.relative_to(root)
        if stream.get("apiVersion") not in corpus.IMAGESTREAM_API_VERSIONS:
            failures.append(f"{where}: apiVersion {stream.get('apiVersion')!r}")
        failures.extend(f"{where}: {error}" for error in schema_errors(stream))
    assert failures == [], f"{len(failures)} problems:\n" + "\n".join(failures)
    assert streams >= FULL_CORPUS_STREAMS, f"found only {streams} ImageStreams in {root}"
    assert tags >= FULL_CORPUS_SPEC_TAGS, f"found only {tags} spec tags in {root}"
    # The fixture subset is an unchanged copy.
    for copied in corpus.manifest_files(corpus.FIXTURE_CORPUS):
        original = root / copied.relative_to(corpus.FIXTURE_CORPUS)
        assert copied.read_bytes() == original.read_bytes(), f"{copied} differs from {original}"


# An ImageStream as `oc get is -o yaml` prints it after imports, one of which failed: every
# field OpenShift has, including the nulls its encoding writes.
EXPORTED = """
apiVersion: image.openshift.io/v1
kind: ImageStream
metadata:
  name: mysql
  namespace: demo
  creationTimestamp: "2024-05-01T10:00:00Z"
  generation: 4
spec:
  lookupPolicy:
    local: true
  dockerImageRepository: ""
  tags:
  - name: "8.0"
    annotations: null
    from:
      kind: DockerImage
      name: docker.io/library/mysql:8.0
    generation: 2
    importPolicy:
      importMode: PreserveOriginal
      scheduled: true
    referencePolicy:
      type: Source
  - name: latest
    annotations:
      openshift.io/display-name: MySQL
    from:
      kind: ImageStreamTag
      name: "8.0"
    generation: null
    importPolicy: {}
    referencePolicy:
      type: Local
  - name: pinned
    annotations: {}
    from:
      kind: ImageStreamImage
      namespace: other
      name: mysql@SHA_A
      uid: 5b3c2f9e-0000-4000-8000-000000000000
      apiVersion: image.openshift.io/v1
      resourceVersion: "123"
      fieldPath: ""
    reference: true
    generation: 0
    importPolicy:
      insecure: true
      importMode: Legacy
    referencePolicy: {}
  - name: broken
    from:
      kind: DockerImage
      name: registry.example.com/nope:1
    importPolicy:
      importMode: ""
    referencePolicy:
      type: ""
status:
  dockerImageRepository: image-registry.openshift-image-registry.svc:5000/demo/mysql
  publicDockerImageRepository: default-route-openshift-image-registry.apps.example.com/demo/mysql
  tags:
  - tag: "8.0"
    items:
    - created: "2024-05-01T10:00:05Z"
      dockerImageReference: docker.io/library/mysql@SHA_B
      image: SHA_B
      generation: 2
      platforms: [linux/amd64, linux/arm64]
    - created: "2024-04-01T09:00:00.123456Z"
      dockerImageReference: docker.io/library/mysql@SHA_C
      image: SHA_C
      generation: 1
  - tag: broken
    items: null
    conditions:
    - type: ImportSuccess
      status: "False"
      lastTransitionTime: "2024-05-01T10:00:06+02:00"
      reason: NotFound
      message: registry.example.com/nope:1 was not found
      generation: 4
  - tag: never
    items: []
    conditions:
    - type: ImportSuccess
      status: Unknown
      lastTransitionTime: null
      generation: 0
"""


def exported() -> dict[str, Any]:
    text = EXPORTED
    for letter in "ABC":
        text = text.replace(f"SHA_{letter}", "sha256:" + letter.lower() * 64)
    return yaml.safe_load(text)


def test_exported_stream_with_every_field_is_accepted() -> None:
    assert schema_errors(exported()) == []


def test_minimal_streams_are_accepted() -> None:
    base = {"apiVersion": "image.openshift.io/v1", "kind": "ImageStream", "metadata": {"name": "a"}}
    assert schema_errors(base) == []
    assert schema_errors({**base, "spec": {}, "status": {}}) == []
    assert schema_errors({**base, "spec": {"tags": [{"name": "t"}]}}) == []


def test_nulls_in_non_nullable_fields_are_dropped_not_refused() -> None:
    """The server removes them before validating (or puts the field's default instead)."""
    doc = exported()
    doc["spec"]["lookupPolicy"]["local"] = None
    doc["spec"]["tags"][0]["importPolicy"] = None
    doc["spec"]["tags"][0]["referencePolicy"] = None
    doc["spec"]["tags"][1]["referencePolicy"]["type"] = None
    doc["status"]["tags"][0]["items"][0]["generation"] = None
    assert schema_errors(doc) == []
    stored = decoded(doc, SCHEMA)
    assert "local" not in stored["spec"]["lookupPolicy"]
    assert "importPolicy" not in stored["spec"]["tags"][0]
    assert stored["spec"]["tags"][0]["referencePolicy"] == {"type": "Source"}
    assert stored["spec"]["tags"][1]["referencePolicy"] == {"type": "Source"}
    assert "generation" not in stored["status"]["tags"][0]["items"][0]
    # Nullable fields keep their null, as OpenShift's own encoding writes it.
    assert stored["spec"]["tags"][0]["annotations"] is None
    assert stored["spec"]["tags"][1]["generation"] is None
    assert stored["status"]["tags"][1]["items"] is None


def test_reference_policy_defaults_to_source() -> None:
    doc = exported()
    stored = decoded(doc, SCHEMA)
    assert [t["referencePolicy"] for t in stored["spec"]["tags"]] == [
        {"type": "Source"},
        {"type": "Local"},
        {"type": "Source"},  # was {}
        {"type": ""},  # stays "": readers treat it as Source
    ]
    del doc["spec"]["tags"][0]["referencePolicy"]
    assert decoded(doc, SCHEMA)["spec"]["tags"][0]["referencePolicy"] == {"type": "Source"}


def tag(doc: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return doc["spec"]["tags"][i]


def status_tag(doc: dict[str, Any], i: int = 0) -> dict[str, Any]:
    return doc["status"]["tags"][i]


REJECTED: list[tuple[str, Callable[[dict[str, Any]], object], str]] = [
    ("from.kind Foo", lambda d: tag(d)["from"].update(kind="Foo"), "'Foo' is not one of"),
    ("from.kind empty", lambda d: tag(d)["from"].update(kind=""), "is not one of"),
    ("from without kind", lambda d: tag(d)["from"].pop("kind"), "'kind' is a required"),
    ("from without name", lambda d: tag(d)["from"].pop("name"), "'name' is a required"),
    ("from.name empty", lambda d: tag(d)["from"].update(name=""), "tags.0.from.name: "),
    ("lookupPolicy.local 'yes'", lambda d: d["spec"]["lookupPolicy"].update(local="yes"), "'yes'"),
    ("referencePolicy Remote", lambda d: tag(d)["referencePolicy"].update(type="Remote"), "Remote"),
    ("importMode Newest", lambda d: tag(d)["importPolicy"].update(importMode="Newest"), "Newest"),
    ("scheduled 'true'", lambda d: tag(d)["importPolicy"].update(scheduled="true"), "'true'"),
    ("reference 1", lambda d: tag(d).update(reference=1), "is not of type 'boolean'"),
    ("generation '2'", lambda d: tag(d).update(generation="2"), "'2' is not of type"),
    ("generation 1.5", lambda d: tag(d).update(generation=1.5), "1.5 is not of type"),
    ("annotation value 1", lambda d: tag(d).update(annotations={"a": 1}), "1 is not of type"),
    ("tag without name", lambda d: tag(d).pop("name"), "'name' is a required"),
    ("tag name 7", lambda d: tag(d).update(name=7), "7 is not of type 'string'"),
    ("tags not a list", lambda d: d["spec"].update(tags={"name": "x"}), "is not of type 'array'"),
    ("duplicate tag", lambda d: d["spec"]["tags"].append(dict(tag(d))), "duplicate entry"),
    ("unknown spec field", lambda d: d["spec"].update(foo=1), "'foo' was unexpected"),
    ("unknown tag field", lambda d: tag(d).update(fromm={}), "'fromm' was unexpected"),
    ("unknown from field", lambda d: tag(d)["from"].update(tag="x"), "'tag' was unexpected"),
    ("unknown root field", lambda d: d.update(data={}), "'data' was unexpected"),
    ("status tag without tag", lambda d: status_tag(d).pop("tag"), "'tag' is a required"),
    ("duplicate status tag", lambda d: d["status"]["tags"].append({"tag": "8.0"}), "duplicate"),
    (
        "condition status Yes",
        lambda d: status_tag(d, 1)["conditions"][0].update(status="Yes"),
        "'Yes' is not one of",
    ),
    (
        "condition without type",
        lambda d: status_tag(d, 1)["conditions"][0].pop("type"),
        "'type' is a required",
    ),
    (
        "created yesterday",
        lambda d: status_tag(d)["items"][0].update(created="yesterday"),
        "is not a 'date-time'",
    ),
    ("name with _", lambda d: d["metadata"].update(name="my_app"), "not a DNS subdomain"),
]


@pytest.mark.parametrize(
    ("mutate", "message"), [pytest.param(m, msg, id=name) for name, m, msg in REJECTED]
)
def test_invalid_stream_is_rejected(
    mutate: Callable[[dict[str, Any]], object], message: str
) -> None:
    doc = exported()
    mutate(doc)
    errors = schema_errors(doc)
    assert errors, "accepted, but OpenShift would refuse it"
    assert any(message in e for e in errors), errors


# --- tests/corpus.py --------------------------------------------------------------------


def test_corpus_reader_handles_lists_yaml_and_json(tmp_path: Path) -> None:
    stream = {"apiVersion": "image.openshift.io/v1", "kind": "ImageStream"}
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "multi.yaml").write_text(
        "---\n"
        + yaml.safe_dump({**stream, "metadata": {"name": "a"}})
        + "---\n"
        + "---\n"  # an empty document
        + yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})
        + "---\n"
        + yaml.safe_dump(
            {
                "apiVersion": "image.openshift.io/v1",
                "kind": "ImageStreamList",
                "items": [
                    {**stream, "metadata": {"name": "b"}},
                    {"kind": "List", "items": [{**stream, "metadata": {"name": "c"}}]},
                ],
            }
        )
    )
    (tmp_path / "list.json").write_text(
        json.dumps({"kind": "List", "items": [{**stream, "metadata": {"name": "d"}}, None]})
    )
    (tmp_path / "one.yml").write_text(yaml.safe_dump({**stream, "metadata": {"name": "e"}}))
    (tmp_path / "notes.txt").write_text("kind: ImageStream\n")
    (tmp_path / "empty.yaml").write_text("")
    found = [
        (str(p.relative_to(tmp_path)), s["metadata"]["name"])
        for p, s in corpus.iter_image_streams(tmp_path)
    ]
    assert found == [
        ("list.json", "d"),
        ("one.yml", "e"),
        ("sub/multi.yaml", "a"),
        ("sub/multi.yaml", "b"),
        ("sub/multi.yaml", "c"),
    ]
    assert corpus.spec_tags({"spec": {"tags": [{"name": "x"}]}}) == [{"name": "x"}]
    assert corpus.spec_tags({"spec": None}) == []
