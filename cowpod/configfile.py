"""Reading a YAML config file given on a command line (`--cluster-config`,
`--encryption-config`): the same two failures, worded once, before the file's own
parser names the field that is wrong."""

from __future__ import annotations

import pathlib
from typing import Any

import yaml

from cowpod.errors import Invalid


def parse_yaml(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise Invalid("", f"not valid YAML: {err}") from None


def read_config(path: str | pathlib.Path, what: str) -> str:
    """The file's text; `what` names the file in the error ("cluster config")."""
    p = pathlib.Path(path)
    try:
        return p.read_text()
    except OSError as err:
        raise Invalid("", f"cannot read {what} {p}: {err.strerror}") from None


__all__ = ["parse_yaml", "read_config"]
