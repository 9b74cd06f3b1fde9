"""`cowpod-controller --autoscale ...`: flags in, the autoscaler's config out."""

from __future__ import annotations

import pathlib

import pytest

from controller.main import parse_args

YAML = """
vmClasses:
  - {name: small, cpu: 1, memory: 1Gi, max: 4}
maxVMs: 10
"""


def test_no_autoscale_no_autoscaler() -> None:
    assert parse_args([]).autoscaler is None


def test_parent_idle_pause_flag(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text(YAML)
    assert parse_args(["--autoscale", "--cluster-config", str(f)]).autoscaler_parent_idle_pause == 30.0
    for text, seconds in (("2m", 120.0), ("0", 0.0)):
        cfg = parse_args(["--autoscale", "--cluster-config", str(f), "--parent-idle-pause", text])
        assert cfg.autoscaler_parent_idle_pause == seconds
    # The file's parentIdlePause, unless the flag says otherwise.
    f.write_text(YAML + "parentIdlePause: 5m\n")
    assert parse_args(["--autoscale", "--cluster-config", str(f)]).autoscaler_parent_idle_pause == 300.0
    flagged = parse_args(["--autoscale", "--cluster-config", str(f), "--parent-idle-pause", "0"])
    assert flagged.autoscaler_parent_idle_pause == 0.0


def test_flags_override_the_file(tmp_path: pathlib.Path) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text(YAML)
    cfg = parse_args(["--autoscale", "--cluster-config", str(f), "--max-vms", "3",
                      "--scale-down-unneeded", "2m"]).autoscaler
    assert cfg is not None
    assert [c.name for c in cfg.vm_classes] == ["small"]
    assert (cfg.max_vms, cfg.scale_down_unneeded_s) == (3, 120.0)
    assert parse_args(["--autoscale", "--cluster-config", str(f)]).autoscaler.max_vms == 10  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-vms", "3"], "--max-vms given without --autoscale"),
        (["--parent-idle-pause", "1m"], "--parent-idle-pause given without --autoscale"),
        (["--autoscale", "--cluster-config", "{f}", "--parent-idle-pause", "later"],
         "--parent-idle-pause: invalid duration"),
        (["--autoscale"], "defines no vmClasses"),
        (["--autoscale", "--cluster-config", "{f}", "--scale-down-unneeded", "soon"],
         "--scale-down-unneeded: invalid duration"),
        (["--autoscale", "--cluster-config", "{bad}"], "vmClasses[0].memory: required"),
    ],
)
def test_bad_flags_exit_2_with_the_reason(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text(YAML)
    bad = tmp_path / "bad.yaml"
    bad.write_text("vmClasses: [{name: s, cpu: 1}]")
    with pytest.raises(SystemExit) as exc:
        parse_args([a.format(f=f, bad=bad) for a in args])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_warm_clone_flags_set_the_docker_providers_settings() -> None:
    default = parse_args(["--provider", "docker"])
    assert default.provider_settings.warm_clones is True and default.provider_settings.warm_shells == 2
    cfg = parse_args(["--provider", "docker", "--no-warm-clones", "--warm-shells", "5"])
    assert cfg.provider_settings.warm_clones is False and cfg.provider_settings.warm_shells == 5
    for bad in (["--provider", "docker", "--warm-shells", "-1"], ["--warm-shells", "3"],
                ["--provider", "sim", "--warm-shells", "3"]):
        with pytest.raises(SystemExit) as e:
            parse_args(bad)
        assert e.value.code == 2


def test_the_cluster_configs_provider_section_is_parsed_by_its_provider(
    tmp_path: pathlib.Path, capsys: pytest.CaptureFixture[str]
) -> None:
    f = tmp_path / "cluster.yaml"
    f.write_text("provider: {name: docker, warmShells: 4, image: my/vm:1}\n")
    cfg = parse_args(["--cluster-config", str(f)])
    assert cfg.provider == "docker" and cfg.autoscaler is None
    assert cfg.provider_settings.warm_shells == 4 and cfg.provider_settings.image == "my/vm:1"
    # --provider is the short form and must agree; a provider's unknown key names its path.
    f.write_text("provider: {name: docker, warmShell: 4}\n")
    with pytest.raises(SystemExit):
        parse_args(["--cluster-config", str(f)])
    assert "provider.warmShell: unknown setting" in capsys.readouterr().err
    f.write_text("provider: sim\n")
    with pytest.raises(SystemExit):
        parse_args(["--cluster-config", str(f), "--provider", "docker"])
    assert "disagrees" in capsys.readouterr().err
    # The pool's ceiling (it grows to the bursts seen, poolsize.py): a whole number >= 0.
    f.write_text("provider: {name: docker, maxWarmShells: 12}\n")
    assert parse_args(["--cluster-config", str(f)]).provider_settings.max_warm_shells == 12
    f.write_text("provider: {name: docker, maxWarmShells: -1}\n")
    with pytest.raises(SystemExit):
        parse_args(["--cluster-config", str(f)])
    assert "provider.maxWarmShells: must be at least 0" in capsys.readouterr().err
