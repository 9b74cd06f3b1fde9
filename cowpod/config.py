"""The CLI's configuration: which controller, how to authenticate, which data dir, which namespace.

Resolved once per invocation from flags, then the environment, then the
state file that `cowpod up` wrote, then the user config file, then defaults,
and passed down as a frozen value (no module globals), so every command and
test sees exactly one answer.

    controller:  --controller > $COWPOD_CONTROLLER > a context switched to in the user config
                 > <data-dir>/cluster.json > current context of the user config > 127.0.0.1:7070
    user config: $COWPOD_CONFIG > <data-dir>/config (~/.cowpod/config); `cowpod up` writes its
                 `local` context there, `cowpod config use-context` switches
    data dir:    --data-dir    > $COWPOD_DATA_DIR   > ~/.cowpod
    namespace:   -n            > $COWPOD_NAMESPACE  > default

Credentials: a local cluster started by `cowpod up` is reached as its admin
(the certificates in its PKI) when it is secure, in plaintext otherwise; a
cluster from the user config with that context's credentials.
"""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from cowpod.auth.config import ENV_CONFIG, LOCAL_CONTEXT, ConnectionSettings, default_config_path
from cowpod.auth.config import load_config as load_user_config
from cowpod.local.state import ClusterState, StateError, connection_for, read_state

DEFAULT_CONTROLLER = "127.0.0.1:7070"
DEFAULT_NAMESPACE = "default"


@dataclass(frozen=True)
class CliConfig:
    controller: str
    data_dir: pathlib.Path
    namespace: str = DEFAULT_NAMESPACE
    debug: bool = False
    # Where `controller` came from: flag | env | state | config | default.
    controller_source: str = "default"
    connection: ConnectionSettings = field(
        default_factory=lambda: ConnectionSettings(server="", insecure=True)
    )

    def __post_init__(self) -> None:
        if not self.connection.server:
            object.__setattr__(self, "connection", ConnectionSettings(server=self.controller, insecure=True))


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
    """Raises StateError or ConfigError (cowpod.auth.config) with a one-line reason."""
    directory = pathlib.Path(data_dir).expanduser() if data_dir else default_data_dir(env)
    ns = namespace or env.get("COWPOD_NAMESPACE") or DEFAULT_NAMESPACE
    try:
        state: ClusterState | None = read_state(directory)
    except StateError:
        state = None  # `status`/`down` report the damage; other verbs go on without it
    # The user config: $COWPOD_CONFIG, else <data dir>/config (~/.cowpod/config).
    user_path = default_config_path(env) if env.get(ENV_CONFIG) else directory / "config"
    user = load_user_config(user_path)
    # A context the user switched to (`cowpod config use-context`) beats the local cluster's state;
    # the `local` context itself is only a copy of what the state says (and stale once it is gone).
    switched = bool(user.current_context) and user.current_context != LOCAL_CONTEXT
    if controller or env.get("COWPOD_CONTROLLER"):
        address = controller or env["COWPOD_CONTROLLER"]
        source = "flag" if controller else "env"
    elif switched:
        settings = user.settings()
        return CliConfig(settings.server, directory, ns, debug, "config", settings)
    elif state is not None and state.controller:
        address, source = state.controller, "state"
    else:
        address, source = DEFAULT_CONTROLLER, "default"
    if state is not None:
        # An explicit address next to a local cluster is taken to be that cluster (e.g. its unix socket).
        connection = connection_for(state, address)
    else:
        connection = ConnectionSettings(server=address, insecure=True)
    return CliConfig(address, directory, ns, debug, source, connection)
