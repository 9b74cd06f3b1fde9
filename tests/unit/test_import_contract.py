"""The import contract: which package may import which, checked on every module's AST.

The layers, bottom to top (a layer imports only those below it and itself):

    cowpod.v1, cowpod.api   the wire types and the shared vocabulary (phases, labels,
                            taints, ids, Resources, quantities, pure validation rules):
                            standard library, protobuf and each other only
    cowpod                  what every process shares (client, clock, errors, informer,
                            manifests, CLI, local cluster): none of controller,
                            scheduler, agent, hypervisor, except below
    scheduler, agent,       each builds on cowpod only and talks to the others through
    hypervisor              the API (gRPC); none imports another of the three or the
                            controller
    controller              the API server and the loops that run inside it: may run the
                            VM manager in process (hypervisor), and asks the scheduler
                            only through its public surface, `scheduler.simulate`
                            (never its framework or plugins)

Two seams cross upward on purpose and are named here, nowhere else:
- the local cluster (`cowpod.local`, `cowpod up` in `cowpod.cli`) is a composition root:
  it reads the provider registry, the provider protocols and the provider preflight
  (`hypervisor`, `hypervisor.registry`, `hypervisor.provider`, `hypervisor.manager`);
- the docker provider's plugin reads the local cluster's state (`cowpod.local`);
- a VM-side entry point starts the agent in the VM (`hypervisor.providers.docker.vm_agent`
  runs `agent.main` in an instant clone, after the VM's identity and network).

Guest-side modules (what runs inside a VM before anything is warm: the QEMU and
vSphere guest inits, `hypervisor.vminit`, `hypervisor.guest`) import the standard
library, each other and `cowpod.api.labels` only.

Function-level imports count the same as top-level ones. What this cannot see:
`importlib.import_module` with a computed name (the zygote's preload list).
"""

from __future__ import annotations

import ast
import pathlib
import subprocess
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
FIRST_PARTY = ("cowpod", "controller", "scheduler", "agent", "hypervisor")

GUEST_SIDE = frozenset({
    "hypervisor.guest",
    "hypervisor.vminit",
    "hypervisor.providers.qemu.guestinit",
    "hypervisor.providers.vsphere.guestinit",
})
COMPOSITION_ROOT_MAY_USE = ("hypervisor", "hypervisor.registry", "hypervisor.provider", "hypervisor.manager")


@dataclass(frozen=True)
class Violation:
    where: str  # path:line
    importer: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"{self.where}: {self.importer} imports {self.imported} ({self.rule})"


def _under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def _top(module: str) -> str:
    return module.split(".")[0]


def rule_broken(importer: str, imported: str) -> str | None:
    """Which rule `importer` breaks by importing `imported`, or None when it may."""
    if importer in GUEST_SIDE:
        if imported in GUEST_SIDE or imported == "cowpod.api.labels" or imported in ("cowpod", "cowpod.api"):
            return None
        if _top(imported) in sys.stdlib_module_names or imported == "__future__":
            return None
        return "guest-side modules import the standard library, each other and cowpod.api.labels only"
    if _top(imported) not in FIRST_PARTY:
        if _under(importer, "cowpod.api") and not (
            _top(imported) in sys.stdlib_module_names or _under(imported, "google.protobuf", "__future__")
        ):
            return "cowpod.api imports the standard library, protobuf and cowpod.v1 only"
        return None
    if _under(importer, "cowpod.api"):
        return None if _under(imported, "cowpod.api", "cowpod.v1") else "cowpod.api imports cowpod.v1 only"
    if _top(importer) == "cowpod":
        if _top(imported) == "cowpod":
            return None
        if _under(importer, "cowpod.local", "cowpod.cli") and imported in COMPOSITION_ROOT_MAY_USE:
            return None
        return "cowpod imports none of controller, scheduler, agent, hypervisor"
    if _top(importer) in ("scheduler", "agent", "hypervisor"):
        if _top(imported) in ("cowpod", _top(importer)):
            return None
        if importer == "hypervisor.providers.docker.plugin" and _under(imported, "cowpod.local"):
            return None
        if importer == "hypervisor.providers.docker.vm_agent" and imported == "agent.main":
            return None
        return f"{_top(importer)} builds on cowpod only and talks to the others through the API"
    if _top(importer) == "controller":
        if _top(imported) in ("cowpod", "controller", "hypervisor"):
            return None
        if imported == "scheduler.simulate":
            return None
        return "the controller asks the scheduler only through scheduler.simulate"
    return None


def _module_name(path: pathlib.Path, root: pathlib.Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_module(root: pathlib.Path, name: str) -> bool:
    path = root / name.replace(".", "/")
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def _imports(root: pathlib.Path, tree: ast.AST, module: str, is_package: bool) -> Iterator[tuple[int, str]]:
    """(line, module imported): `from pkg import x` imports pkg.x when that is a module, else pkg."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            for name in {f"{target}.{a.name}" for a in node.names}:
                yield node.lineno, name if _is_module(root, name) else target


def violations(root: pathlib.Path, files: Iterable[pathlib.Path]) -> list[Violation]:
    out: list[Violation] = []
    for path in files:
        module = _module_name(path, root)
        if _under(module, "cowpod.v1"):
            continue  # generated
        tree = ast.parse(path.read_text(), str(path))
        for line, imported in sorted(set(_imports(root, tree, module, path.name == "__init__.py"))):
            rule = rule_broken(module, imported)
            if rule is not None:
                out.append(Violation(f"{path.relative_to(root)}:{line}", module, imported, rule))
    return out


def _tracked_sources() -> list[pathlib.Path]:
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "--",
         *(f"{p}/*.py" for p in FIRST_PARTY)],
        cwd=ROOT, capture_output=True, text=True, check=True,
    ).stdout.split()
    return [ROOT / f for f in listed if (ROOT / f).exists()]


def test_the_tree_keeps_the_import_contract() -> None:
    files = _tracked_sources()
    assert len(files) > 100  # the whole tree was read, not an empty listing
    found = violations(ROOT, files)
    assert not found, "imports that break the layering:\n" + "\n".join(map(str, found))


@pytest.mark.parametrize(
    ("importer", "source", "rule"),
    [
        ("controller/bad.py", "from scheduler.plugins.taint_toleration import f\n", "scheduler.simulate"),
        ("controller/bad.py", "def f():\n    import scheduler.framework.types\n", "scheduler.simulate"),
        ("cowpod/api/bad.py", "import grpc\n", "protobuf"),
        ("cowpod/api/bad.py", "from cowpod import client\n", "cowpod.v1 only"),
        ("cowpod/bad.py", "from controller.store import Store\n", "cowpod imports none"),
        ("agent/bad.py", "from hypervisor import guest\n", "through the API"),
        ("scheduler/bad.py", "from controller import kinds\n", "through the API"),
        ("hypervisor/vminit.py", "from controller import kinds\n", "guest-side"),
        ("hypervisor/guest.py", "import grpc\n", "guest-side"),
    ],
)
def test_an_upward_import_is_caught(tmp_path: pathlib.Path, importer: str, source: str, rule: str) -> None:
    packages = ("cowpod/api", "controller", "scheduler/plugins", "scheduler/framework", "agent", "hypervisor")
    for pkg in packages:
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    for mod in ("scheduler/plugins/taint_toleration.py", "scheduler/framework/types.py", "cowpod/client.py",
                "controller/store.py", "controller/kinds.py", "hypervisor/guest.py"):
        (tmp_path / mod).write_text("")
    bad = tmp_path / importer
    bad.write_text(source)
    [found] = violations(tmp_path, [bad])
    assert rule in found.rule


def test_allowed_imports_pass(tmp_path: pathlib.Path) -> None:
    for pkg in ("cowpod/api", "controller", "scheduler", "hypervisor"):
        (tmp_path / pkg).mkdir(parents=True, exist_ok=True)
        (tmp_path / pkg / "__init__.py").write_text("")
    (tmp_path / "scheduler/simulate.py").write_text("")
    (tmp_path / "cowpod/api/labels.py").write_text("import enum\n")
    (tmp_path / "hypervisor/manager.py").write_text("")
    ok = tmp_path / "controller/good.py"
    ok.write_text("from scheduler.simulate import fits_on\nfrom hypervisor import manager\n"
                  "from cowpod.api import labels\n")
    assert violations(tmp_path, [ok, tmp_path / "cowpod/api/labels.py"]) == []
