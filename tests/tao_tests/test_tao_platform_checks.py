"""Container platforms before any job: the SDK's own mount keys, its errors as blockers, the pre-flight's
docker/Slurm/Kubernetes rules. No daemon or cluster needed (fakes on PATH where a tool is asked)."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deftpipe.cli import app
from deftpipe.errors import SpecError
from deftpipe.pipeline import preflight
from deftpipe.tao import TaoSettings, make_sdk
from deftpipe.tao._jobs import KUBERNETES_REFUSAL, docker_mounts, slurm_mounts

from ._tao_ws import SPLIT_CSVS

MOUNTS = [{"host_path": "/data/tao", "container_path": "/data/tao"}, {"host_path": "/home/me/ws", "container_path": "/ws"}]


@pytest.mark.tao_slurm
def test_tao_slurm_mounts_reach_the_sdk_in_its_own_keys():
    """SlurmSDK reads from_path|source|src -> mount_path|path|target and silently drops other spellings:
    deftpipe's mounts must all survive its own translation (and the raw spelling would not)."""
    from tao_sdk.platforms.slurm.handler import SlurmHandler

    h = SlurmHandler.__new__(SlurmHandler)
    h.container_mounts = "/lustre"  # the SDK's fallback when it found no mount
    assert h._container_mounts_from_kwargs({"mounts": slurm_mounts(MOUNTS)}) == "/data/tao:/data/tao,/home/me/ws:/ws"
    assert h._container_mounts_from_kwargs({"mounts": MOUNTS}) == "/lustre"  # the drop this guards against


@pytest.mark.tao_docker
def test_tao_docker_mounts_reach_the_sdk_in_its_own_keys():
    from tao_sdk.platforms.docker.handler import DockerHandler

    h = DockerHandler.__new__(DockerHandler)
    vols = h._build_volumes(docker_mounts([*MOUNTS, {"host_path": "/opt/site", "container_path": "/s", "mode": "ro"}]))
    assert vols == {"/data/tao": {"bind": "/data/tao", "mode": "rw"}, "/home/me/ws": {"bind": "/ws", "mode": "rw"},
                    "/opt/site": {"bind": "/s", "mode": "ro"}}


def test_tao_kubernetes_is_refused_with_the_reason_and_the_way_out(tao_src, tmp_path):
    assert "takes no volumes" in KUBERNETES_REFUSAL and "PVC or hostPath" in KUBERNETES_REFUSAL
    with pytest.raises(SpecError, match="kubernetes' is not supported: .*takes no volumes"):
        make_sdk(TaoSettings(platform="kubernetes"))
    src, spec = tao_src
    res = CliRunner().invoke(app, ["init", "--from-tao", str(spec), str(tmp_path / "ws"), "--kpi-csv",
                                   str(src / SPLIT_CSVS["kpi"]), "--pool-csv", str(src / SPLIT_CSVS["pool"]),
                                   "--platform", "kubernetes"])
    assert res.exit_code == 1 and isinstance(res.exception, SpecError)  # the CLI prints it as one line
    assert "takes no volumes" in str(res.exception) and "\n" not in str(res.exception)
    assert not (tmp_path / "ws").exists()


def test_tao_sdk_errors_are_blockers_never_internal_errors(monkeypatch, tmp_path):
    for var in ("SLURM_USER", "SSH_USER", "SLURM_HOSTNAME", "SSH_HOST"):
        monkeypatch.delenv(var, raising=False)
    with pytest.raises(SpecError, match=r"could not start its slurm platform: CredentialError: .*SLURM_USER"):
        make_sdk(TaoSettings(platform="slurm", state_dir=str(tmp_path)))
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "docker" else real(name, *a))
    with pytest.raises(SpecError, match=r"needs nvidia-tao-sdk\[docker\] for platform 'docker' \(docker not "
                                        r"installed\); pip install 'deftpipe\[tao\]'$"):
        make_sdk(TaoSettings(platform="docker", state_dir=str(tmp_path)))


def _platform_ws(tao_src, tmp_path, platform: str, **settings) -> Path:
    src, spec = tao_src
    ws = tmp_path / "ws"
    res = CliRunner().invoke(app, ["init", "--from-tao", str(spec), str(ws), "--kpi-csv", str(src / SPLIT_CSVS["kpi"]),
                                   "--pool-csv", str(src / SPLIT_CSVS["pool"]), "--platform", platform])
    assert res.exit_code == 0, res.output
    for f in ("pipeline.yaml", "specs/baseline_spec.yaml"):
        doc = yaml.safe_load((ws / f).read_text())
        doc["adapter"]["tao"].update(settings)
        (ws / f).write_text(yaml.safe_dump(doc, sort_keys=False))
    return ws


def _fake_tools(tmp_path: Path, monkeypatch, **scripts: str) -> None:
    """Put shell scripts named like the tools first on PATH (and nothing of nvidia-smi)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")


def test_tao_preflight_docker_gives_the_daemons_reason_and_needs_a_gpu_or_cpu(tao_src, tmp_path, monkeypatch):
    ws = _platform_ws(tao_src, tmp_path, "docker", gpu_count=1)
    # docker info without a daemon: a blank line on stdout, the reason on stderr
    _fake_tools(tmp_path, monkeypatch, docker="echo; echo 'Cannot connect to the Docker daemon at "
                "unix:///var/run/docker.sock. Is the docker daemon running?' >&2; exit 1")
    blockers = preflight(ws, measure=False)["blockers"]
    assert any("docker daemon not reachable (Cannot connect to the Docker daemon" in b for b in blockers)
    assert any("no GPU visible here" in b and "adapter.tao.gpu_count: 0" in b for b in blockers)
    ws_cpu = _platform_ws(tao_src, tmp_path / "cpu", "docker", gpu_count=0)
    assert not any("GPU" in b for b in preflight(ws_cpu, measure=False)["blockers"])


def test_tao_preflight_blocks_job_paths_outside_the_mounts(tao_src, tmp_path, monkeypatch):
    _fake_tools(tmp_path, monkeypatch, docker="echo 20.10.24")
    ws = _platform_ws(tao_src, tmp_path, "docker", gpu_count=0)
    report = preflight(ws, measure=False)  # init mounted the workspace and the TAO data: covered
    assert not any("outside adapter.tao.mounts" in b for b in report["blockers"]), report["blockers"]
    ws2 = _platform_ws(tao_src, tmp_path / "b", "docker", gpu_count=0,
                       mounts=[{"host_path": str((tmp_path / "b" / "ws").resolve()), "container_path": "/ws"}])
    bad = [b for b in preflight(ws2, measure=False)["blockers"] if "outside adapter.tao.mounts" in b]
    assert len(bad) == 1 and "workspace (results)" in bad[0] and str(tao_src[0].resolve()) in bad[0]


def test_tao_preflight_slurm_needs_a_partition(tao_src, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_USER", os.environ.get("USER") or "me")
    monkeypatch.setenv("SLURM_HOSTNAME", "login.example")
    _fake_tools(tmp_path, monkeypatch, ssh='case "$*" in *"-o %G"*) echo "gpu:8";; *) echo "slurm 22.05.8";; esac')
    ws = _platform_ws(tao_src, tmp_path, "slurm", gpu_count=1)
    blockers = preflight(ws, measure=False)["blockers"]
    assert any("adapter.tao.partition is unset" in b for b in blockers)
    ws2 = _platform_ws(tao_src, tmp_path / "p", "slurm", gpu_count=1, partition="gpu")
    assert not any("partition" in b for b in preflight(ws2, measure=False)["blockers"])
    ws3 = _platform_ws(tao_src, tmp_path / "c", "slurm", gpu_count=0, partition="gpu")
    assert any("still asks Slurm for one GPU" in w for w in preflight(ws3, measure=False)["warnings"])


def test_tao_sdk_failure_mid_run_is_one_clear_error():
    """The daemon or cluster going away while a job is watched: one TrainingError in the SDK's words."""
    from types import SimpleNamespace

    from deftpipe.errors import TrainingError
    from deftpipe.tao import TaoJobs

    def gone(*_a, **_k):
        raise ConnectionError("Error while fetching server API version: ('Connection aborted.')")

    jobs = TaoJobs(TaoSettings(platform="docker", poll_s=0.01))
    jobs._sdk_obj = SimpleNamespace(get_job_status=gone, list_jobs=gone, get_job=gone)
    with pytest.raises(TrainingError, match=r"could not read the status of job j1 on docker: ConnectionError: "
                                            r"Error while fetching .*rerun the same command"):
        jobs.wait("j1")
    with pytest.raises(TrainingError, match="could not list its jobs on docker"):
        jobs.find("train", {"x": 1}, Path("/nonexistent"))
