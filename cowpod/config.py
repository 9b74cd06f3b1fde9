"""The CLI's configuration: which controller, which data dir, which namespace.

Resolved once per invocation from flags, then the environment, then the
state file that `cowpod up` wrote, then defaults, and passed down as a frozen
value (no module globals), so every command and test sees exactly one answer.

    controller:  --controller  > $COWPOD_CONTROLLER > <data-dir>/cluster.json > 127.0.0.1:7070
    data dir:    --data-dir    > $COWPOD_DATA_DIR   > ~/.cowpod
    namespace:   -n            > $COWPOD_NAMESPACE  > default
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass

from cowpod.local.state import StateError, read_state

DEFAULT_CONTROLLER = "127.0.0.1:7070"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class CliConfig:
    controller: str
    data_dir: pathlib.Path
    namespace: str = DEFAULT_NAMESPACE
    debug: bool = False
    # Where `controller` came from: flag | env | state | default (said in connection errors).
    controller_source: str = "default"


def default_data_dir(env: Mapping[str, str]) -> pathlib.Path:
    if env.get("COWPOD_DATA_DIR"):
        return pathlib.Path(env["COWPOD_DATA_DIR"]).expanduser()
    home = env.get("HOME")
    return (pathlib.Path(home) if home else pathlib.Path.home()) / ".cowpod"


def load_config(
    *,
    env: Mapping[str, str],
    controller: str | None = None,
    data_dir: str | None = None,
    namespace: str | None = None,
    debug: bool = False,
) -> CliConfig:
    directory = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir(env)
    ns = namespace or env.get("COWPOD_NAMESPACE") or DEFAULT_NAMESPACE
    if controller:
        return CliConfig(controller, directory, ns, debug, "flag")
    if env.get("COWPOD_CONTROLLER"):
        return CliConfig(env["COWPOD_CONTROLLER"], directory, ns, debug, "env")
    try:
        state = read_state(directory)
    except StateError:
        state = None  # `status`/`down` report the damage; other verbs fall back to the default
    if state is not None and state.controller:
        return CliConfig(state.controller, directory, ns, debug, "state")
    return CliConfig(DEFAULT_CONTROLLER, directory, ns, debug, "default")
