"""The user config file, `~/.cowpod/config`: which clusters, which credentials.

It has the shape of a kubeconfig, so a Kubernetes user reads it at once:

    apiVersion: v1
    kind: Config
    current-context: local
    clusters:
    - name: local
      cluster:
        server: 127.0.0.1:7070                # host:port or unix:///path
        certificate-authority: pki/ca.crt     # or certificate-authority-data: <base64 PEM>
        tls-server-name: cowpod-controller    # the name the controller's certificate carries
        transport-certificate: pki/transport.crt   # see below
        transport-key: pki/transport.key
    users:
    - name: admin
      user:
        client-certificate: pki/admin.crt     # or client-certificate-data, client-key(-data)
        client-key: pki/admin.key
    - name: viewer
      user:
        token: abcd1234.<secret>              # or token-file: /path
    contexts:
    - name: local
      context: {cluster: local, user: admin}

Relative paths are relative to the file's directory. Every connection to a
cowpod controller is TLS with a client certificate (gRPC's Python server can
only require one or not ask at all). A user who holds only a token
presents the cluster's *transport certificate* (CN=system:anonymous, no
rights, deliberately not secret) and is then authenticated by the token.
`insecure: true` on a cluster means plaintext, for a controller started
with `--insecure` only.
"""

from __future__ import annotations

import base64
import binascii
import os
import pathlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import yaml

ENV_CONFIG = "COWPOD_CONFIG"


class ConfigError(ValueError):
    """The config file is unreadable or names something it does not define."""


# The context `cowpod up` writes for the local cluster it starts (as its admin), and
# the user that context names.
LOCAL_CONTEXT = "local"
LOCAL_ADMIN_USER = "local-admin"


def default_config_path(environ: Mapping[str, str] | None = None) -> pathlib.Path:
    """$COWPOD_CONFIG, else <data dir>/config: $COWPOD_DATA_DIR/config or ~/.cowpod/config."""
    env = os.environ if environ is None else environ
    if env.get(ENV_CONFIG):
        return pathlib.Path(env[ENV_CONFIG]).expanduser()
    if env.get("COWPOD_DATA_DIR"):
        return pathlib.Path(env["COWPOD_DATA_DIR"]).expanduser() / "config"
    return pathlib.Path("~/.cowpod/config").expanduser()


@dataclass(frozen=True)
class ClusterEntry:
    name: str
    server: str
    certificate_authority: str = ""
    certificate_authority_data: str = ""
    tls_server_name: str = ""
    transport_certificate: str = ""
    transport_certificate_data: str = ""
    transport_key: str = ""
    transport_key_data: str = ""
    insecure: bool = False


@dataclass(frozen=True)
class UserEntry:
    name: str
    client_certificate: str = ""
    client_certificate_data: str = ""
    client_key: str = ""
    client_key_data: str = ""
    token: str = ""
    token_file: str = ""

    def __repr__(self) -> str:
        return f"UserEntry(name={self.name!r}, token={'***' if self.token else ''!r}, ...)"


@dataclass(frozen=True)
class ContextEntry:
    name: str
    cluster: str
    user: str


@dataclass(frozen=True)
class ConnectionSettings:
    """Everything needed to open a channel, with files already read."""

    server: str
    cluster: str = ""
    user: str = ""
    context: str = ""
    ca_pem: bytes | None = None
    tls_server_name: str = ""
    client_cert_pem: bytes | None = None
    client_key_pem: bytes | None = None
    token: str = ""
    insecure: bool = False

    def __repr__(self) -> str:
        return (
            f"ConnectionSettings(server={self.server!r}, context={self.context!r}, "
            f"user={self.user!r}, insecure={self.insecure}, token={'***' if self.token else ''!r})"
        )


# YAML key <-> dataclass attribute
_CLUSTER_KEYS = {
    "server": "server",
    "certificate-authority": "certificate_authority",
    "certificate-authority-data": "certificate_authority_data",
    "tls-server-name": "tls_server_name",
    "transport-certificate": "transport_certificate",
    "transport-certificate-data": "transport_certificate_data",
    "transport-key": "transport_key",
    "transport-key-data": "transport_key_data",
    "insecure": "insecure",
}
_USER_KEYS = {
    "client-certificate": "client_certificate",
    "client-certificate-data": "client_certificate_data",
    "client-key": "client_key",
    "client-key-data": "client_key_data",
    "token": "token",
    "token-file": "token_file",
}


def _entries(doc: Mapping[str, Any], section: str, inner: str) -> list[tuple[str, dict[str, Any]]]:
    raw = doc.get(section)
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(f"{section}: must be a list")
    out = []
    for i, item in enumerate(raw):
        where = f"{section}[{i}]"
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or not item["name"]:
            raise ConfigError(f"{where}.name: required")
        body = item.get(inner) or {}
        if not isinstance(body, dict):
            raise ConfigError(f"{where}.{inner}: must be a mapping")
        out.append((item["name"], body))
    return out


def _fields(where: str, body: Mapping[str, Any], keys: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in body.items():
        if k not in keys:
            raise ConfigError(f"{where}.{k}: unknown field (known: {', '.join(keys)})")
        attr = keys[k]
        if attr == "insecure":
            if not isinstance(v, bool):
                raise ConfigError(f"{where}.{k}: must be true or false")
        elif not isinstance(v, str):
            raise ConfigError(f"{where}.{k}: must be a string")
        out[attr] = v
    return out


@dataclass(frozen=True)
class UserConfig:
    clusters: tuple[ClusterEntry, ...] = ()
    users: tuple[UserEntry, ...] = ()
    contexts: tuple[ContextEntry, ...] = ()
    current_context: str = ""
    # Where relative paths in the file are resolved from.
    base_dir: pathlib.Path = field(default_factory=lambda: pathlib.Path("."))

    # -- reading and writing

    @staticmethod
    def from_dict(doc: Mapping[str, Any], base_dir: pathlib.Path) -> UserConfig:
        if not isinstance(doc, Mapping):
            raise ConfigError("the config must be a YAML mapping")
        clusters = []
        for i, (name, body) in enumerate(_entries(doc, "clusters", "cluster")):
            f = _fields(f"clusters[{i}].cluster", body, _CLUSTER_KEYS)
            if not f.get("server"):
                raise ConfigError(f"clusters[{i}].cluster.server: required")
            clusters.append(ClusterEntry(name=name, **f))
        users = [
            UserEntry(name=name, **_fields(f"users[{i}].user", body, _USER_KEYS))
            for i, (name, body) in enumerate(_entries(doc, "users", "user"))
        ]
        contexts = []
        for i, (name, body) in enumerate(_entries(doc, "contexts", "context")):
            f = _fields(f"contexts[{i}].context", body, {"cluster": "cluster", "user": "user"})
            contexts.append(ContextEntry(name=name, cluster=f.get("cluster", ""), user=f.get("user", "")))
        current = doc.get("current-context") or ""
        if not isinstance(current, str):
            raise ConfigError("current-context: must be a string")
        return UserConfig(tuple(clusters), tuple(users), tuple(contexts), current, base_dir)

    def to_dict(self) -> dict[str, Any]:
        def dump(entry: object, keys: Mapping[str, str]) -> dict[str, Any]:
            return {k: getattr(entry, a) for k, a in keys.items() if getattr(entry, a)}

        return {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": self.current_context,
            "clusters": [{"name": c.name, "cluster": dump(c, _CLUSTER_KEYS)} for c in self.clusters],
            "users": [{"name": u.name, "user": dump(u, _USER_KEYS)} for u in self.users],
            "contexts": [
                {"name": c.name, "context": {"cluster": c.cluster, "user": c.user}} for c in self.contexts
            ],
        }

    def save(self, path: pathlib.Path) -> None:
        """Write with mode 0600: the file may hold tokens and key paths."""
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            yaml.safe_dump(self.to_dict(), f, sort_keys=False)
        os.replace(tmp, path)

    # -- editing (each returns a new config)

    def with_cluster(self, entry: ClusterEntry) -> UserConfig:
        return replace(self, clusters=(*[c for c in self.clusters if c.name != entry.name], entry))

    def with_user(self, entry: UserEntry) -> UserConfig:
        return replace(self, users=(*[u for u in self.users if u.name != entry.name], entry))

    def with_context(self, entry: ContextEntry, *, use: bool = False) -> UserConfig:
        cfg = replace(self, contexts=(*[c for c in self.contexts if c.name != entry.name], entry))
        return replace(cfg, current_context=entry.name) if use else cfg

    def use_context(self, name: str) -> UserConfig:
        self._context(name)
        return replace(self, current_context=name)

    # -- resolving

    def _context(self, name: str) -> ContextEntry:
        for c in self.contexts:
            if c.name == name:
                return c
        known = ", ".join(c.name for c in self.contexts) or "none"
        raise ConfigError(f"context {name!r} is not in the config (contexts: {known})")

    def _path(self, p: str) -> pathlib.Path:
        path = pathlib.Path(p).expanduser()
        return path if path.is_absolute() else self.base_dir / path

    def _pem(self, what: str, path: str, data: str) -> bytes | None:
        if data:
            try:
                return base64.b64decode(data, validate=True)
            except binascii.Error:
                raise ConfigError(f"{what}-data: not valid base64") from None
        if path:
            try:
                return self._path(path).read_bytes()
            except OSError as err:
                raise ConfigError(f"{what}: cannot read {self._path(path)}: {err.strerror}") from None
        return None

    def settings(self, context: str | None = None) -> ConnectionSettings:
        name = context or self.current_context
        if not name:
            raise ConfigError("no current-context in the config; `cowpod up` writes one")
        ctx = self._context(name)
        cluster = next((c for c in self.clusters if c.name == ctx.cluster), None)
        if cluster is None:
            raise ConfigError(f"context {name!r} names cluster {ctx.cluster!r}, which is not in the config")
        user = next((u for u in self.users if u.name == ctx.user), None)
        if user is None:
            raise ConfigError(f"context {name!r} names user {ctx.user!r}, which is not in the config")
        token = user.token
        if not token and user.token_file:
            try:
                token = self._path(user.token_file).read_text().strip()
            except OSError as err:
                raise ConfigError(f"token-file: cannot read {user.token_file}: {err.strerror}") from None
        cert = self._pem("client-certificate", user.client_certificate, user.client_certificate_data)
        key = self._pem("client-key", user.client_key, user.client_key_data)
        if (cert is None) != (key is None):
            raise ConfigError(f"user {user.name!r}: client-certificate and client-key go together")
        if cert is None:
            cert = self._pem(
                "transport-certificate", cluster.transport_certificate, cluster.transport_certificate_data
            )
            key = self._pem("transport-key", cluster.transport_key, cluster.transport_key_data)
        ca = self._pem(
            "certificate-authority", cluster.certificate_authority, cluster.certificate_authority_data
        )
        if not cluster.insecure and ca is None:
            raise ConfigError(f"cluster {cluster.name!r}: certificate-authority required (or insecure: true)")
        return ConnectionSettings(
            server=cluster.server,
            cluster=cluster.name,
            user=user.name,
            context=name,
            ca_pem=ca,
            tls_server_name=cluster.tls_server_name,
            client_cert_pem=cert,
            client_key_pem=key,
            token=token,
            insecure=cluster.insecure,
        )

    def describe(self, context: str | None = None) -> str:
        """What `cowpod config` prints: which cluster and user, never a secret."""
        name = context or self.current_context
        if not name:
            return "no current context (run `cowpod up`, or `cowpod config use-context NAME`)"
        ctx = self._context(name)
        cluster = next((c for c in self.clusters if c.name == ctx.cluster), None)
        user = next((u for u in self.users if u.name == ctx.user), None)
        if user is None:
            how = "missing"
        elif user.client_certificate or user.client_certificate_data:
            how = "client certificate"
        elif user.token or user.token_file:
            how = "bearer token"
        else:
            how = "no credentials"
        lines = [
            f"context:  {name}",
            f"cluster:  {ctx.cluster} ({cluster.server if cluster else 'missing'})"
            + (" INSECURE (plaintext)" if cluster and cluster.insecure else ""),
            f"user:     {ctx.user} ({how})",
        ]
        return "\n".join(lines)


def load_config(path: pathlib.Path | None = None) -> UserConfig:
    """Read the config file; a missing file is an empty config."""
    p = path or default_config_path()
    try:
        text = p.read_text()
    except FileNotFoundError:
        return UserConfig(base_dir=p.parent)
    except OSError as err:
        raise ConfigError(f"{p}: {err.strerror}") from None
    try:
        doc = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML: {err}") from None
    try:
        return UserConfig.from_dict(doc, p.parent)
    except ConfigError as err:
        raise ConfigError(f"{p}: {err}") from None


def settings_for_cluster(
    server: str,
    *,
    ca_pem: bytes | None,
    client_cert_pem: bytes | None = None,
    client_key_pem: bytes | None = None,
    token: str = "",
    tls_server_name: str = "",
    insecure: bool = False,
) -> ConnectionSettings:
    """Settings without a config file: what processes started with flags use."""
    return ConnectionSettings(
        server=server,
        ca_pem=ca_pem,
        client_cert_pem=client_cert_pem,
        client_key_pem=client_key_pem,
        token=token,
        tls_server_name=tls_server_name,
        insecure=insecure,
    )


def with_local_cluster(cfg: UserConfig, *, server: str, secure: bool, pki_dir: pathlib.Path) -> UserConfig:
    """The config with the `local` context of a cluster `cowpod up` started, made current.

    Secure: the cluster's CA and transport pair, and its admin certificate as user
    `local-admin`. Insecure: `insecure: true`, no credentials."""
    from cowpod.pki import CONTROLLER_SERVER_NAME

    if secure:
        cluster = ClusterEntry(
            LOCAL_CONTEXT, server,
            certificate_authority=str(pki_dir / "ca.crt"),
            tls_server_name=CONTROLLER_SERVER_NAME,
            transport_certificate=str(pki_dir / "transport.crt"),
            transport_key=str(pki_dir / "transport.key"),
        )
        user = UserEntry(LOCAL_ADMIN_USER, client_certificate=str(pki_dir / "admin.crt"),
                         client_key=str(pki_dir / "admin.key"))
    else:
        cluster = ClusterEntry(LOCAL_CONTEXT, server, insecure=True)
        user = UserEntry(LOCAL_ADMIN_USER)
    cfg = cfg.with_cluster(cluster).with_user(user)
    return cfg.with_context(ContextEntry(LOCAL_CONTEXT, LOCAL_CONTEXT, user.name), use=True)


def write_local_context(path: pathlib.Path, *, server: str, secure: bool, pki_dir: pathlib.Path) -> None:
    """Merge the local cluster into the config file at `path` (what `cowpod up` does)."""
    cfg = load_config(path)
    with_local_cluster(cfg, server=server, secure=secure, pki_dir=pki_dir.resolve()).save(path)


def without_local_cluster(cfg: UserConfig) -> UserConfig:
    """The config less what `with_local_cluster` adds (its cluster, user and context);
    no current context if that was the local one. Other clusters' entries stay."""
    return replace(
        cfg,
        clusters=tuple(c for c in cfg.clusters if c.name != LOCAL_CONTEXT),
        users=tuple(u for u in cfg.users if u.name != LOCAL_ADMIN_USER),
        contexts=tuple(c for c in cfg.contexts if c.name != LOCAL_CONTEXT),
        current_context="" if cfg.current_context == LOCAL_CONTEXT else cfg.current_context,
    )


def remove_local_context(path: pathlib.Path) -> bool:
    """Take the local cluster out of the config file at `path` (what `cowpod down --purge`
    does, as `kind delete cluster` edits the kubeconfig): its entries name certificates
    the purge deletes. The file goes when nothing else is left in it. Returns whether
    the file changed."""
    if not path.exists():
        return False
    cfg = load_config(path)
    left = without_local_cluster(cfg)
    if left == cfg:
        return False
    if left.clusters or left.users or left.contexts:
        left.save(path)
    else:
        path.unlink()
    return True
