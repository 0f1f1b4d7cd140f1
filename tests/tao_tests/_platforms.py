"""The TAO backend on real platforms: a docker daemon and a one-node Slurm cluster (``.ci/services.sh``).

Each test adopts the session's TAO workspace with ``init --from-tao --platform P`` and points the
platform at the local stand-in image (``_image.py``), with the mounts the docs prescribe: the deftpipe
workspace (its results and ``.tao_sdk`` job store inside it) and the TAO data folder at the same paths,
plus the image's read-only site-packages mount. Budgets are tiny; ``gpu_count: 0`` declares CPU.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from ._image import build_image, site_mount
from ._tao_ws import SPLIT_CSVS

SSH_KEY = Path("/etc/deftpipe-ci/ssh/id_ed25519")  # written by .ci/services.sh (root's key for localhost)


def require(service: str, ok: bool, why: str) -> None:
    """Skip locally when a service is missing, but fail in CI (DEFTPIPE_REQUIRE_SERVICES=1)."""
    if ok:
        return
    msg = f"{service} is not available ({why}); start it with .ci/services.sh"
    if os.environ.get("DEFTPIPE_REQUIRE_SERVICES"):
        pytest.fail(msg)
    pytest.skip(msg)


def docker_up() -> bool:
    return shutil.which("docker") is not None and subprocess.run(
        ["docker", "info"], capture_output=True, check=False).returncode == 0


def slurm_up() -> bool:
    if shutil.which("sinfo") is None or not SSH_KEY.is_file():
        return False
    res = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, check=False)
    return res.returncode == 0 and any(st in res.stdout for st in ("idle", "mix", "alloc"))


def platform_env(platform: str, ws: Path, monkeypatch) -> None:
    """The SDK's own environment for the platform (credentials, cluster settings)."""
    if platform == "slurm":
        for k, v in {"SLURM_USER": os.environ.get("USER") or "root", "SLURM_HOSTNAME": "localhost",
                     "SSH_KEY_PATH": str(SSH_KEY), "SLURM_BASE_RESULTS_DIR": str(ws / ".tao_sdk" / "slurm"),
                     "SLURM_USE_SQSH": "0", "SLURM_CPUS_PER_TASK": "1", "SLURM_TIME_HOURS": "1",
                     "SLURM_USE_REQUEUE": "0"}.items():
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("DOCKER_PULL_POLICY", "never")  # the image is local; a pull would need a registry


def tao_settings(platform: str, ws: Path, data: Path, image: str) -> dict:
    settings = {"platform": platform, "image": image, "gpu_count": 0, "poll_s": 1.0,
                "state_dir": str(ws / ".tao_sdk"),
                "mounts": [{"host_path": str(ws), "container_path": str(ws)},
                           {"host_path": str(data), "container_path": str(data)}, site_mount()]}
    if platform == "slurm":
        settings["partition"] = "debug"
    return settings


def adopt(platform: str, tao_src: tuple[Path, Path], ws: Path, image: str) -> dict:
    """``init --from-tao --platform P`` into ``ws``, then the platform settings in both files."""
    from deftpipe.cli import app

    src, spec = tao_src
    res = CliRunner().invoke(app, ["init", "--from-tao", str(spec), str(ws), "--kpi-csv", str(src / SPLIT_CSVS["kpi"]),
                                   "--pool-csv", str(src / SPLIT_CSVS["pool"]), "--platform", platform])
    assert res.exit_code == 0, res.output
    settings = tao_settings(platform, ws.resolve(), src.parent.resolve(), image)
    for f, at in (("pipeline.yaml", ("adapter", "tao")), ("specs/baseline_spec.yaml", ("adapter", "tao"))):
        doc = yaml.safe_load((ws / f).read_text())
        doc[at[0]][at[1]].update(settings)
        (ws / f).write_text(yaml.safe_dump(doc, sort_keys=False))
    return settings


def platform_image(platform: str) -> str:
    """The stand-in image tag, once the platform's services answer (skip or fail otherwise)."""
    import importlib.util

    require("docker-py", importlib.util.find_spec("docker") is not None,
            "the docker Python package is missing: pip install -e '.[dev]'")
    require("docker", docker_up(), "no docker daemon answers `docker info`")
    if platform == "slurm":
        require("slurm", slurm_up(), f"no idle Slurm node, or no ssh key {SSH_KEY}")
    return build_image()
