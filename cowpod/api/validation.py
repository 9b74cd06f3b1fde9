"""The pure validation rules of the API: name and label patterns, closed value sets.

The controller's validation (controller/validation.py: every request, the
authority) and the CLI's early check of a manifest (cowpod/manifest: a fast,
precise answer before anything is sent) word their messages each their own
way, but they must test the *same* rule: both read the patterns, limits and
value sets here, so a name one accepts the other cannot refuse.
"""

from __future__ import annotations

import re

from cowpod.api.labels import TaintEffect

# Kubernetes' IsDNS1123Label / IsDNS1123Subdomain / IsQualifiedName (name part) / IsValidLabelValue.
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_LABEL_MAX = 63
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
DNS1123_SUBDOMAIN_MAX = 253
LABEL_NAME = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
LABEL_NAME_MAX = 63
LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
LABEL_VALUE_MAX = 63
# Kubernetes' IsEnvVarName (C_IDENTIFIER is too strict for what it accepts).
ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
# An IANA_SVC_NAME-ish port name: lowercase letters, digits and "-".
PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def is_dns_label(value: str) -> bool:
    return len(value) <= DNS1123_LABEL_MAX and DNS1123_LABEL.match(value) is not None


def is_dns_subdomain(value: str) -> bool:
    return len(value) <= DNS1123_SUBDOMAIN_MAX and DNS1123_SUBDOMAIN.match(value) is not None


def is_label_name(name: str) -> bool:
    """The name part of a qualified key (after the optional `prefix/`)."""
    return len(name) <= LABEL_NAME_MAX and LABEL_NAME.match(name) is not None


def is_label_value(value: str) -> bool:
    return len(value) <= LABEL_VALUE_MAX and LABEL_VALUE.match(value) is not None


# Closed value sets ("" = unset is allowed where the field is optional; the callers say so).
RESTART_POLICIES = ("Always", "OnFailure", "Never")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
PROTOCOLS = ("TCP", "UDP", "SCTP")
TAINT_EFFECTS = tuple(e.value for e in TaintEffect)
TOLERATION_OPERATORS = ("Equal", "Exists")
NODE_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt")
LABEL_SELECTOR_OPERATORS = ("In", "NotIn", "Exists", "DoesNotExist")
CONDITION_STATUSES = ("True", "False", "Unknown")
EVENT_TYPES = ("Normal", "Warning")
VOLUME_SOURCES = ("empty_dir", "host_path", "config_map", "secret", "downward_api")
"""The PodSpec volume oneof's fields, in proto names."""
