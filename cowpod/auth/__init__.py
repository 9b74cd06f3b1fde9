"""Client-side authentication: bearer tokens, the user config file
(`~/.cowpod/config`, like a kubeconfig) and TLS credentials for a `Client`.

    from cowpod.auth import connect, load_config
    async with connect(load_config()) as client:
        ...

Imports only `cowpod` itself; the controller's checks live in `controller/auth/`.
"""

from __future__ import annotations

from cowpod.auth.config import ConnectionSettings, UserConfig, load_config
from cowpod.auth.credentials import connect

__all__ = ["ConnectionSettings", "UserConfig", "connect", "load_config"]
