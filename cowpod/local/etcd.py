"""Run an etcd member as a child process (the Debian `etcd-server` binary).

Used by `cowpod up` for the embedded single-member default, by `--etcd-members 3`
for a local cluster, and by test fixtures, so tests run the same etcd users do.

With `tls` (what a secure `cowpod up` gives it) the member serves clients and peers
over TLS and **requires a client certificate** from etcd's own CA
(`--client-cert-auth`, `--peer-client-cert-auth`): a local user who reaches the
port cannot read or write the cluster's state (token records included) without the
controller's etcd key. Without it, plaintext on loopback (test fixtures).
"""

from __future__ import annotations

import pathlib
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

from cowpod.pki import TLSFiles


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def etcd_binary() -> str:
    path = shutil.which("etcd")
    if path is None:
        raise FileNotFoundError(
            "etcd binary not found on PATH; install it with `apt-get install etcd-server`"
        )
    return path


@dataclass
class EtcdMember:
    data_dir: pathlib.Path
    name: str = "default"
    client_port: int = field(default_factory=free_port)
    peer_port: int = field(default_factory=free_port)
    # "name=http://127.0.0.1:port,..." for multi-member clusters; empty = single member.
    initial_cluster: str = ""
    quota_bytes: int = 0
    log_path: pathlib.Path | None = None
    tls: TLSFiles | None = None
    proc: subprocess.Popen[bytes] | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.peer_port}"

    def command(self) -> list[str]:
        cluster = self.initial_cluster or f"{self.name}={self.peer_url}"
        cmd = [
            etcd_binary(),
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", f"{self.scheme}://127.0.0.1:{self.client_port}",
            "--advertise-client-urls", f"{self.scheme}://127.0.0.1:{self.client_port}",
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", "cowpod",
            "--logger", "zap",
            "--log-outputs", "stderr",
        ]
        if self.tls is not None:
            t = self.tls
            cmd += [
                "--cert-file", str(t.cert), "--key-file", str(t.key),
                "--trusted-ca-file", str(t.ca), "--client-cert-auth",
                "--peer-cert-file", str(t.cert), "--peer-key-file", str(t.key),
                "--peer-trusted-ca-file", str(t.ca), "--peer-client-cert-auth",
            ]
        if self.quota_bytes:
            cmd += ["--quota-backend-bytes", str(self.quota_bytes)]
        return cmd

    def start(self, *, detach: bool = False) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            self.command(),
            stdout=log,
            stderr=log,
            stdin=subprocess.DEVNULL,
            start_new_session=detach,
        )

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(
                    f"etcd {self.name} exited with {self.proc.returncode}; see {self.log_path}"
                )
            try:
                with socket.create_connection(("127.0.0.1", self.client_port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"etcd {self.name} did not listen on {self.endpoint} within {timeout:.0f}s")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
