"""Pre-flight sections 1–3 for a TAO run (``adapter.kind: tao``): platform, credentials, artefacts.

Added to the consolidated pre-flight's first three sections by :func:`add_tao_checks`. Read-only: the
binaries and daemon of the platform (docker + the NVIDIA container runtime via nvidia-tao-sdk's own
``check_nvidia_container_runtime``; ssh to the Slurm host; the kube context), the container image
PRESENT/MISSING, the credentials the SDK reads (SET/UNSET, never their values), the GPU and a batch-size
rule of thumb, and the mining-embedding choice.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from deftpipe.tao._jobs import (
    KUBERNETES_REFUSAL,
    STANDIN,
    platform_packages_missing,
    script_path,
    sdk_missing_message,
    state_root,
    venv_path,
)
from deftpipe.tao._spec import spec_constraints


def item(name: str, value: Any, status: str | None = None) -> dict[str, Any]:
    """One row of a pre-flight section (the same shape as the pipeline's own rows)."""
    return {"name": name, "value": value, "status": status}


#: Environment variables the SDK reads per platform (names from tao_sdk.platforms.*.sdk); * = required.
CREDENTIALS = {
    "virtualenv": (),
    "docker": ("NGC_KEY*", "DOCKER_HOST", "HF_TOKEN", "S3_BUCKET_NAME", "ACCESS_KEY", "SECRET_KEY"),
    "slurm": ("SLURM_USER*", "SLURM_HOSTNAME*", "SSH_KEY_PATH", "SLURM_BASE_RESULTS_DIR", "NGC_KEY*", "HF_TOKEN"),
    "kubernetes": ("NGC_KEY*", "KUBECONFIG", "TAO_K8S_CONTEXT", "TAO_K8S_NAMESPACE", "HF_TOKEN"),
}
_ALIASES = {"SLURM_USER": "SSH_USER", "SLURM_HOSTNAME": "SSH_HOST"}  # the SDK accepts either
#: Rule of thumb: pairs per batch ~ GPU GiB x (256x256) / (pixels x lights) for a FAN-small backbone.
_PIXELS_PER_GIB = 256 * 256
MINING_NOTE = ("pair_difference: TAO exports no classify embedding, so mining embeds each pair by its "
               "|test - golden| image (8x8 pooled, L2-normalised; model-free) and ranks by TAO's siamese_score")


def _run(argv: list[str], timeout: float = 10) -> tuple[bool, str]:
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError) as e:
        return False, str(e)
    # the first line of what the tool said: stdout, else stderr (`docker info` without a daemon
    # prints a blank line to stdout and its reason to stderr)
    text = p.stdout.strip() or p.stderr.strip()
    return p.returncode == 0, text.splitlines()[0] if text else f"exit status {p.returncode}"


def _is_set(var: str) -> bool:
    return bool(os.environ.get(var) or (var in _ALIASES and os.environ.get(_ALIASES[var])))


def gpu_memory_gib() -> list[tuple[str, float]]:
    """(name, GiB) per GPU from nvidia-smi; [] without one."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return []
    ok, _ = _run([smi, "-L"])
    if not ok:
        return []
    p = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader,nounits"],
                       capture_output=True, text=True, timeout=10, check=False)
    gpus = []
    for line in p.stdout.strip().splitlines():
        name, _, mib = line.rpartition(",")
        try:
            gpus.append((name.strip(), float(mib) / 1024))
        except ValueError:
            continue
    return gpus


def batch_rule_of_thumb(gib: float, size: int, lights: int) -> int:
    return max(1, int(gib * _PIXELS_PER_GIB / (size * size * max(1, lights))))


def _platform_items(s: Any, blockers: list[str], warnings: list[str]) -> list[dict[str, Any]]:
    items = []
    if s.platform == "virtualenv":
        venv = venv_path(s)
        ok = (venv / "pyvenv.cfg").is_file()
        if not ok:
            blockers.append(f"TAO virtualenv {venv} is not a virtual environment; set adapter.tao.venv")
        items.append(item("TAO platform", f"virtualenv {venv} (local jobs: no docker, no GPU needed)",
                          "ok" if ok else "MISSING"))
        note = " (deftpipe's stand-in: the built-in CNN keeping TAO's file contract, not TAO's model)" \
            if script_path(s) == STANDIN else ""
        found = script_path(s).is_file()
        if not found:
            blockers.append(f"TAO trainer script {script_path(s)} is missing; fix adapter.tao.script")
        items.append(item("TAO trainer script", f"{script_path(s)}{note}", "PRESENT" if found else "MISSING"))
    elif s.platform == "docker":
        found = shutil.which("docker")
        ok, msg = _run(["docker", "info", "--format", "{{.ServerVersion}}"]) if found else (False, "docker not on PATH")
        if not ok:
            blockers.append(f"docker daemon not reachable ({msg}); start docker or choose another platform")
        items.append(item("TAO platform", f"docker {'daemon ' + msg if ok else '(' + msg + ')'}",
                          "ok" if ok else "MISSING"))
        if ok and s.gpu_count == 0:
            items.append(item("NVIDIA container runtime", "not needed (adapter.tao.gpu_count: 0 — CPU jobs)", "ok"))
        elif ok:
            try:
                from tao_sdk.preflight import check_nvidia_container_runtime

                r = check_nvidia_container_runtime()
                rok, rmsg = bool(r.ok), str(r.message)
            except Exception as e:  # the SDK's own failure is a finding, never an internal error
                rok, rmsg = False, f"the SDK's check failed: {type(e).__name__}: {e}"
            if not rok:
                blockers.append(f"{rmsg}; install nvidia-container-toolkit (or set adapter.tao.gpu_count: 0 to run "
                                "TAO on CPU)")
            items.append(item("NVIDIA container runtime", rmsg, "ok" if rok else "MISSING"))
    elif s.platform == "slurm":
        items.extend(_slurm_items(s, blockers))
        if not s.gpu_count:
            warnings.append("adapter.tao.gpu_count is 0 but nvidia-tao-sdk 7.2.0's SlurmSDK still asks Slurm for "
                            "one GPU (--gres=gpu:1): the jobs need a partition with GPUs anyway")
    else:
        blockers.append(KUBERNETES_REFUSAL)
        items.append(item("TAO platform", "kubernetes (refused: the SDK cannot mount the workspace)", "MISSING"))
    return items


def _ssh(argv: list[str], timeout: float = 20) -> tuple[bool, str]:
    """Run a command on the Slurm login host the way the SDK reaches it (its env, its key)."""
    host = (os.environ.get("SLURM_HOSTNAME") or os.environ.get("SSH_HOST") or "").split(",")[0].strip()
    user = os.environ.get("SLURM_USER") or os.environ.get("SSH_USER")
    if not shutil.which("ssh"):
        return False, "ssh not on PATH"
    if not host or not user:
        return False, "SLURM_HOSTNAME/SLURM_USER unset"
    key = os.environ.get("SSH_KEY_PATH")
    opts = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=5", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", *(["-i", key] if key else [])]
    return _run(["ssh", *opts, f"{user}@{host}", *argv], timeout=timeout)


def _slurm_items(s: Any, blockers: list[str]) -> list[dict[str, Any]]:
    ok, msg = _ssh(["sinfo", "--version"])
    if not ok:
        blockers.append(f"Slurm login host not reachable over ssh ({msg}); set SLURM_HOSTNAME/SLURM_USER "
                        "and an ssh key (SSH_KEY_PATH or ssh-agent)")
    items = [item("TAO platform", f"slurm via ssh to the login host ({msg or 'ok'})", "ok" if ok else "MISSING")]
    if not s.partition:
        blockers.append("adapter.tao.partition is unset: nvidia-tao-sdk would submit to its own default "
                        "partitions (polar,polar3,polar4,grizzly); set your cluster's partition")
    elif ok:
        pok, gres = _ssh(["sinfo", "-h", "-p", s.partition, "-o", "%G"])
        if not pok or not gres:
            blockers.append(f"Slurm partition '{s.partition}' not found on the cluster ({gres}); fix "
                            "adapter.tao.partition")
        elif s.gpu_count and "gpu" not in gres:
            blockers.append(f"Slurm partition '{s.partition}' has no GPUs (gres: {gres}); choose a GPU partition "
                            "or set adapter.tao.gpu_count: 0 to run TAO on CPU")
        items.append(item("Slurm partition", f"{s.partition} (gres: {gres or '?'})", "ok" if pok and gres else
                          "MISSING"))
    return items


def _image_item(s: Any, blockers: list[str]) -> dict[str, Any]:
    if s.platform == "virtualenv":
        return item("TAO container image", "not used (virtualenv platform)", "ok")
    if s.platform == "docker" and shutil.which("docker"):
        ok, _ = _run(["docker", "image", "inspect", "--format", "{{.Id}}", s.image])
        if not ok and not _is_set("NGC_KEY"):
            blockers.append(f"TAO image {s.image} is not pulled and NGC_KEY is unset; `docker pull {s.image}` "
                            "or export NGC_KEY")
        return item("TAO container image", s.image, "PRESENT" if ok else "MISSING")
    return item("TAO container image", f"{s.image} (pulled by the cluster at launch)", None)


def add_tao_checks(sections: list[dict[str, Any]], cfg: Any, spec: Any, blockers: list[str],
                   warnings: list[str], ws: str | Path | None = None) -> None:
    """Add the TAO items to sections 1 (host), 2 (credentials) and 3 (artefacts), in place.

    ``ws`` (the workspace) lets the container platforms check that every path a job reads or writes
    lies inside a mount."""
    from deftpipe._tao_schema import TaoSettings

    host, creds, arts = sections[0]["items"], sections[1]["items"], sections[2]["items"]
    s = spec.adapter.tao or TaoSettings()
    if cfg.adapter.kind != spec.adapter.kind or (cfg.adapter.tao is not None and cfg.adapter.tao != spec.adapter.tao):
        blockers.append("pipeline.yaml's adapter section and the spec's adapter section differ; make them the "
                        "same (init --from-tao writes both) so every phase runs on the backend the pre-flight shows")
    try:
        sdk = f"nvidia-tao-sdk {metadata.version('nvidia-tao-sdk')}"
    except metadata.PackageNotFoundError:
        sdk = None
        blockers.append("nvidia-tao-sdk is not installed; pip install 'deftpipe[tao]'")
    host.append(item("model backend", f"TAO Visual ChangeNet ({spec.tao.model.backbone.type if spec.tao else '?'}) "
                     f"through {sdk or 'nvidia-tao-sdk (missing)'}", "ok" if sdk else "MISSING"))
    missing = platform_packages_missing(s.platform)
    if missing:
        blockers.append(sdk_missing_message(s.platform, missing))
    host.extend(_platform_items(s, blockers, warnings))
    gpus = gpu_memory_gib()
    lights = spec.model.num_input
    size = spec.model.input_size
    if gpus:
        name, gib = gpus[0]
        fit = batch_rule_of_thumb(gib, size, lights)
        host.append(item("TAO GPU", f"{len(gpus)} x {name}, {gib:.0f} GiB"))
        host.append(item("batch size (rule of thumb)", f"~{fit} pairs of {size}x{size}x{lights} per {gib:.0f} GiB "
                         f"(spec: {spec.train.batch_size}); lower dataset.classify.batch_size on CUDA OOM"))
        if spec.train.batch_size > fit:
            warnings.append(f"batch size {spec.train.batch_size} is above the rule of thumb ({fit}) for "
                            f"{gib:.0f} GiB; TAO may run out of GPU memory")
    else:
        if s.platform == "docker" and s.gpu_count:
            blockers.append(f"no GPU visible here (nvidia-smi) but adapter.tao.gpu_count is {s.gpu_count}: the "
                            "docker jobs would not start; run on a GPU host, or set adapter.tao.gpu_count: 0 to "
                            "run TAO on CPU (slow)")
        host.append(item("TAO GPU", "none visible here" + (" (the cluster's GPUs are used)" if s.platform in
                                                          ("slurm", "kubernetes") else "") +
                         (" — CPU jobs (adapter.tao.gpu_count: 0)" if not s.gpu_count else ""), None))
        host.append(item("batch size (rule of thumb)", f"~{batch_rule_of_thumb(16, size, lights)} pairs of "
                         f"{size}x{size}x{lights} per 16 GiB GPU (spec: {spec.train.batch_size})"))
    needed = CREDENTIALS[s.platform]
    creds[:] = [i for i in creds if i["name"] != "none required"]
    for var in needed:
        required = var.endswith("*")
        name = var.rstrip("*")
        is_set = _is_set(name)
        creds.append(item(f"${name} (TAO {s.platform}{', required' if required else ''})", None,
                          "SET" if is_set else "UNSET"))
        if required and not is_set and name != "NGC_KEY":
            blockers.append(f"${name} is unset; the TAO {s.platform} platform needs it — export it before `deftpipe run`")
    if not needed:
        creds.append(item("TAO credentials", "none required (virtualenv platform: no registry, no cluster)", "ok"))
    source = spec.tao.source if spec.tao else None
    if source:
        arts.append(item("TAO spec (adopted, unchanged)", source, "PRESENT" if Path(source).is_file() else "MISSING"))
    arts.append(_image_item(s, blockers))
    if s.platform in ("docker", "slurm") and ws is not None:
        arts.append(_mounts_item(s, job_paths(ws, cfg, spec, s), blockers))
    if ws is not None:
        blockers.extend(budget_constraints(ws, cfg, spec))

    arts.append(item("TAO job store", f"{state_root(s)} (a resumed run re-attaches to its jobs here)"))
    arts.append(item("mining embedding", MINING_NOTE))


def _space_policies(path: Path) -> set[str]:
    """The ``train.optim.policy`` values a search-space file lets a sweep pick (either spelling)."""
    from deftpipe._yaml import load_yaml_file

    try:
        doc = load_yaml_file(path, "search space") if path.is_file() else {}
    except Exception:  # the sweep's own checks report a bad file
        return set()
    out: set[str] = set()
    for key in ("train.optim.policy", "tao.train.optim.policy"):
        p = doc.get(key) if isinstance(doc, dict) else None
        if isinstance(p, dict):
            out |= {str(c) for c in p.get("choices") or []} | ({str(p["value"])} if "value" in p else set())
        elif isinstance(p, str):
            out.add(p)
    return out


def budget_constraints(ws: str | Path, cfg: Any, spec: Any) -> list[str]:
    """TAO's own limits (:func:`~deftpipe.tao._spec.tao_constraints`) on the spec and on every epoch
    budget the run will use: Phase 1 and Phase 3 trials, DEFT retrains, with any policy a sweep can pick."""
    policies = {spec.tao.train.optim.policy} if spec.tao else set()
    for phase in (cfg.automl.phase1, cfg.automl.phase3):
        if phase.search_space:
            policies |= _space_policies(cfg.path(ws, phase.search_space))
    budgets = {"automl.phase1.num_epochs": cfg.automl.phase1.num_epochs,
               "automl.phase3.num_epochs": cfg.automl.phase3.num_epochs, "deft.num_epochs": cfg.deft.num_epochs}
    out = [f"TAO: {p}" for p in spec_constraints(spec)]
    if "step" in policies:
        short = {k: v for k, v in budgets.items() if v < 3}
        if short:
            out.append("TAO: train.optim.policy 'step' (in the spec or a sweep's search space) needs >= 3 epochs "
                       "(TAO's StepLR step_size = num_epochs // 3), but " + ", ".join(f"{k} = {v}" for k, v in
                                                                               short.items())
                       + "; pin 3+ epochs there or drop 'step' from the search space")
    return out


def job_paths(ws: str | Path, cfg: Any, spec: Any, s: Any) -> dict[str, Path]:
    """Every path a TAO job reads or writes, by what it is: the workspace (results, combined CSVs),
    the job store (inference results, scratch inputs), the datasets and the image root."""
    paths = {"workspace (results)": Path(ws).resolve(), "TAO job store (adapter.tao.state_dir)": state_root(s)}
    for name in ("train_csv", "val_csv", "kpi_csv", "pool_csv", "holdout_csv"):
        p = cfg.path(ws, getattr(cfg.data, name))
        if p.is_file():
            paths[f"data.{name}"] = p
    paths["images (data.images_dir)"] = cfg.path(ws, cfg.data.images_dir)
    for name in ("train_csv", "val_csv"):
        p = getattr(spec.dataset.classify, name, None)
        if p:
            paths[f"spec {name}"] = Path(p)
    return {k: v.expanduser().resolve() for k, v in paths.items()}


def uncovered(paths: dict[str, Path], mounts: list[dict[str, str]]) -> list[str]:
    """The paths no same-path mount covers (deftpipe writes host paths into the TAO spec, so a mount
    must put a host folder at the same path inside the container)."""
    roots = [Path(m["host_path"]).expanduser().resolve() for m in mounts
             if (m.get("container_path") or m["host_path"]) == m["host_path"]]
    return [f"{what} {p}" for what, p in paths.items() if not any(p == r or r in p.parents for r in roots)]


def _mounts_item(s: Any, paths: dict[str, Path], blockers: list[str]) -> dict[str, Any]:
    bad = uncovered(paths, s.mounts)
    if bad:
        blockers.append(f"the TAO {s.platform} jobs could not see {len(bad)} path(s) outside adapter.tao.mounts: "
                        + "; ".join(bad) + " — add {host_path: P, container_path: P} mounts (same path inside "
                        "the container) covering them")
    listed = ", ".join(f"{m['host_path']}->{m.get('container_path') or m['host_path']}" for m in s.mounts) or "none"
    return item("TAO mounts", f"{listed} ({len(paths) - len(bad)}/{len(paths)} job paths covered)",
                "ok" if not bad else "MISSING")


__all__ = ["add_tao_checks", "batch_rule_of_thumb", "budget_constraints", "job_paths", "uncovered"]
