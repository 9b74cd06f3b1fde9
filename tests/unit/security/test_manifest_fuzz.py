"""Hostile manifests at the manifest parser: a clear FieldError naming a path, or a
message; never another exception (a crash in `cowpod apply` is a bug)."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings

from cowpod.manifest import FieldError, ManifestError, decode_object, load_text
from tests.unit.security.strategies import hostile_manifests, hostile_values, invalid_pods

FAST = settings(
    max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow]
)


@FAST
@given(hostile_manifests())
def test_hostile_manifest_is_decoded_or_rejected_with_a_path(doc: Any) -> None:
    try:
        decode_object(doc)
    except FieldError as err:
        assert str(err)


@FAST
@given(hostile_values)
def test_any_document_shape_is_handled(doc: Any) -> None:
    try:
        decode_object(doc)
    except FieldError as err:
        assert str(err)


@FAST
@given(invalid_pods(over_limits=True))
def test_rule_breaking_pods_get_a_field_path_or_reach_the_server(doc: Any) -> None:
    # Client-side checks may catch a broken rule (with the field's path) or leave it
    # to the controller, which the integration fuzz suite holds to INVALID_ARGUMENT.
    try:
        decode_object(doc)
    except FieldError as err:
        assert err.path.startswith(("metadata", "spec")), str(err)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(hostile_manifests())
def test_yaml_text_of_hostile_manifest(doc: Any) -> None:
    try:
        text = yaml.safe_dump(doc)
    except yaml.YAMLError:
        return
    try:
        load_text(text, "fuzz.yaml")
    except ManifestError as err:
        assert "fuzz.yaml" in str(err)
