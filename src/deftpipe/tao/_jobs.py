"""Run one TAO action (train / inference) as a job through nvidia-tao-sdk, and re-attach to it.

A job is identified by its results folder and its spec: deftpipe gives every job a folder of its own
(``<out_dir>/tao`` for a train, ``<state_dir>/deftpipe_inference/<key>`` for an inference), writes the
SDK's job id into ``<folder>/tao_job.json`` as soon as the SDK returns it, and before launching asks
the SDK's durable job store whether a job for that folder already exists (the ledger first, then the
store's own records, which hold the spec and so the folder). A deftpipe process killed while a job
runs therefore finds the job on resume and waits for it — a running or finished job is never launched
a second time; only a job that ended in ``Error`` or ``Canceled`` is launched again — or a job the
SDK reports as orphaned (its launcher was killed before it recorded the job's process, so the SDK
keeps it non-terminal for manual recovery and it would never finish): waiting for one stops with a
clear error, and the rerun launches the action again.

Platforms: ``virtualenv`` runs ``settings.script`` with ``VirtualEnvSDK.create_python_job`` (no docker,
no GPU; the spec path is substituted); ``docker``/``slurm``/``kubernetes`` run
``visual_changenet <action> -e <spec>`` in ``settings.image`` through ``DockerSDK``/``SlurmSDK``/
``KubernetesSDK.create_job`` (the nvidia-tao-sdk extras of the same names).
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from deftpipe._fs import atomic_write_json, atomic_write_text
from deftpipe._tao_schema import TaoSettings
from deftpipe.errors import SpecError, TrainingError

LEDGER = "tao_job.json"
SPEC_NAME = "experiment.yaml"
TERMINAL = ("Complete", "Error", "Canceled")
STANDIN = Path(__file__).with_name("standin.py")
_SDK_EXTRA = {"docker": "docker", "slurm": "slurm", "kubernetes": "kubernetes"}
#: what the virtualenv SDK says of a Pending/Running job whose process is gone for good
ORPHANED = ("launcher identity is unavailable", "launcher ended without a durable quiescence record")


#: the Python packages each container platform's SDK imports (nvidia-tao-sdk's extras; docker is
#: not a dependency of nvidia-tao-sdk itself, and DockerSDK fails with a CredentialError without it)
PLATFORM_PACKAGES = {"docker": ("docker",), "slurm": (), "virtualenv": ()}
KUBERNETES_REFUSAL = (
    "adapter.tao.platform 'kubernetes' is not supported: nvidia-tao-sdk 7.2.0's KubernetesSDK.create_job "
    "takes no volumes, so the TAO pod could see neither the spec, the CSVs and images nor its results "
    "folder; use docker or slurm (a later SDK that mounts a PVC or hostPath into the job would make it work)")


def platform_packages_missing(platform: str) -> list[str]:
    """The Python packages the platform's SDK needs that this interpreter cannot import."""
    import importlib.util

    return [m for m in PLATFORM_PACKAGES.get(platform, ()) if importlib.util.find_spec(m) is None]


def sdk_missing_message(platform: str, missing: list[str] | None = None) -> str:
    extra = _SDK_EXTRA.get(platform)
    pkg = f"nvidia-tao-sdk[{extra}]" if extra else "nvidia-tao-sdk"
    what = f" ({', '.join(missing)} not installed)" if missing else ""
    return f"the TAO backend needs {pkg} for platform '{platform}'{what}; pip install 'deftpipe[tao]'"


def state_root(settings: TaoSettings) -> Path:
    """The SDK's state folder: ``settings.state_dir``, else ``$TAO_SDK_STATE_DIR``, else ``~/.tao_sdk``."""
    import os

    if settings.state_dir:
        return Path(settings.state_dir).expanduser().resolve()
    env = os.environ.get("TAO_SDK_STATE_DIR", "").strip()
    return Path(env).expanduser() if env else Path.home() / ".tao_sdk"


def venv_path(settings: TaoSettings) -> Path:
    return Path(settings.venv).expanduser().resolve() if settings.venv else Path(sys.prefix)


def script_path(settings: TaoSettings) -> Path:
    return Path(settings.script).expanduser().resolve() if settings.script else STANDIN


def make_sdk(settings: TaoSettings) -> Any:
    """The platform's SDK object, with its job store under :func:`state_root`.

    Raises:
        SpecError: the platform's Python packages are missing (the exact ``pip install``), or the SDK
            refused to start (its own message: a missing credential, no daemon, ...).
    """
    root = state_root(settings)
    if settings.platform == "kubernetes":
        raise SpecError(KUBERNETES_REFUSAL)
    try:
        if settings.platform == "virtualenv":
            from tao_sdk import VirtualEnvSDK

            venv = venv_path(settings)
            if not (venv / "pyvenv.cfg").is_file():
                raise SpecError(f"adapter.tao.venv {venv} is not a virtual environment (no pyvenv.cfg); "
                                "point it at the venv that runs the TAO trainer script")
            return VirtualEnvSDK(venv, work_dir=root / "virtualenv", state_file=root / "virtualenv" / "tao_session.db")
        missing = platform_packages_missing(settings.platform)
        if missing:
            raise SpecError(sdk_missing_message(settings.platform, missing))
        state_file = root / f"{settings.platform}_state.json"
        root.mkdir(parents=True, exist_ok=True)
        if settings.platform == "docker":
            from tao_sdk.platforms.docker import DockerSDK

            return DockerSDK(poll_interval=max(1, int(settings.poll_s)), state_file=state_file)
        import os

        from tao_sdk.platforms.slurm import SlurmSDK

        if settings.account:  # SlurmSDK 7.2.0 ignores create_job(account=...): it reads SLURM_ACCOUNT
            os.environ["SLURM_ACCOUNT"] = settings.account
        return SlurmSDK(poll_interval=max(1, int(settings.poll_s)), state_file=state_file)
    except SpecError:
        raise
    except ImportError as e:
        raise SpecError(sdk_missing_message(settings.platform, [e.name or "nvidia-tao-sdk"])) from None
    except Exception as e:  # the SDK's own errors (CredentialError, docker's DockerException, ...)
        raise SpecError(f"nvidia-tao-sdk could not start its {settings.platform} platform: "
                        f"{type(e).__name__}: {sdk_reason(e)}") from None


def sdk_reason(e: BaseException) -> str:
    """An SDK exception's message on one line (the daemon's own words, not a traceback)."""
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 400 else text[:397] + "..."


def spec_digest(doc: dict[str, Any]) -> str:
    """Identity of a job's spec (JSON-normalised, as the SDK's job store keeps it)."""
    return hashlib.sha1(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()


def docker_mounts(mounts: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """``adapter.tao.mounts`` as DockerSDK reads them (``host_path``/``container_path``, ``mode``)."""
    return [{"host_path": m["host_path"], "container_path": m.get("container_path") or m["host_path"],
             "mode": m.get("mode", "rw")} for m in mounts] or None


def slurm_mounts(mounts: list[dict[str, str]]) -> list[dict[str, str]] | None:
    """``adapter.tao.mounts`` in SlurmSDK's own keys (``from_path`` -> ``mount_path``; its handler reads
    ``from_path|source|src`` and ``mount_path|path|target`` and silently drops any other spelling)."""
    return [{"from_path": m["host_path"], "mount_path": m.get("container_path") or m["host_path"]}
            for m in mounts] or None


def _container_command(action: str, spec_file: Path) -> str:
    return f"visual_changenet {action} -e {shlex.quote(str(spec_file))}"


class TaoJobs:
    """Launch-or-re-attach for TAO actions. Builds nothing in ``__init__`` (the SDK is made on first use)."""

    def __init__(self, settings: TaoSettings | None = None):
        self.settings = settings or TaoSettings()
        self._sdk_obj: Any = None

    @property
    def sdk(self) -> Any:
        if self._sdk_obj is None:
            self._sdk_obj = make_sdk(self.settings)
        return self._sdk_obj

    def _ask(self, what: str, method: str, *args: Any, **kwargs: Any) -> Any:
        """One SDK call; its failure (the daemon or cluster gone, ssh refused) is one clear error."""
        fn = getattr(self.sdk, method)
        try:
            return fn(*args, **kwargs)
        except Exception as e:
            raise TrainingError(f"nvidia-tao-sdk could not {what} on {self.settings.platform}: {type(e).__name__}: "
                                f"{sdk_reason(e)}; once it answers again, rerun the same command (it re-attaches "
                                "to its TAO jobs)") from None

    # -- finding a job that already exists ---------------------------------------------------
    def find(self, action: str, doc: dict[str, Any], results_dir: Path) -> str | None:
        """The SDK job id of ``action`` on this very ``doc`` for ``results_dir`` (the ledger, then the
        SDK's job store); a job for the same folder but another spec is not this job."""
        digest = spec_digest(doc)
        ledger = results_dir / LEDGER
        if ledger.is_file():
            try:
                rec = json.loads(ledger.read_text(encoding="utf-8"))
                if rec.get("action") == action and rec.get("spec_sha1") == digest and \
                        self._ask("read its job store", "get_job", rec["job_id"]):
                    return str(rec["job_id"])
            except (OSError, ValueError, KeyError):
                pass
        for row in self._ask("list its jobs", "list_jobs"):  # newest first: a job launched just before a crash, no ledger yet
            try:
                specs = json.loads(row.get("specs") or "{}")
            except ValueError:
                continue
            if row.get("action") == action and specs.get("results_dir") == str(results_dir) \
                    and spec_digest(specs) == digest:
                self._write_ledger(results_dir, str(row["job_id"]), action, doc)
                return str(row["job_id"])
        return None

    def _write_ledger(self, results_dir: Path, job_id: str, action: str, doc: dict[str, Any]) -> None:
        atomic_write_json(results_dir / LEDGER, {"job_id": job_id, "action": action,
                                                 "platform": self.settings.platform, "spec_sha1": spec_digest(doc)})

    def status(self, job_id: str) -> str:
        """The job's status; ``Orphaned`` for a job that reads Pending/Running but has no process."""
        st = self._ask(f"read the status of job {job_id}", "get_job_status", job_id)
        if st.status in ("Pending", "Running") and any(h in (st.message or "") for h in ORPHANED):
            return "Orphaned"
        return st.status

    # -- launching ---------------------------------------------------------------------------
    def launch(self, action: str, doc: dict[str, Any], results_dir: Path) -> str:
        s = self.settings
        shutil.rmtree(results_dir / action, ignore_errors=True)  # leftovers of a failed attempt
        results_dir.mkdir(parents=True, exist_ok=True)
        if s.platform == "virtualenv":
            job = self.sdk.create_python_job(
                script_path(s), specs=doc, config_format="yaml", script_args=[action, "-e", "{config_path}"],
                network_arch="visual_changenet", action=action, gpu_count=s.gpu_count, cwd=results_dir)
        else:
            spec_file = atomic_write_text(results_dir / f"{action}_{SPEC_NAME}", yaml.safe_dump(doc, sort_keys=False))
            cmd = _container_command(action, spec_file)
            extra: dict[str, Any] = {}
            if s.platform == "docker":
                # run_as_user: the container runs as this process's UID:GID, so what TAO writes (train/,
                # status.json) belongs to the user who ran deftpipe, whatever user the image names
                extra = {"mounts": docker_mounts(s.mounts), "shm_size": s.shm_size, "run_as_user": True}
            else:
                extra = {"partition": s.partition, "account": s.account, "mounts": slurm_mounts(s.mounts)}
            try:
                job = self.sdk.create_job(image=s.image, command=cmd, gpu_count=s.gpu_count, **extra)
            except Exception as e:  # the daemon's / cluster's refusal, in its own words
                raise TrainingError(f"TAO {action} job could not be launched on {s.platform}: "
                                    f"{type(e).__name__}: {sdk_reason(e)}") from None
        self._write_ledger(results_dir, str(job.id), action, doc)
        return str(job.id)

    def wait(self, job_id: str) -> str:
        t0 = time.monotonic()
        poll = min(self.settings.poll_s, 0.2) if self.settings.platform == "virtualenv" else self.settings.poll_s
        while True:
            status = self.status(job_id)
            if status in TERMINAL:
                return status
            if status == "Orphaned":
                raise TrainingError(f"TAO job {job_id} lost its process (its launcher was killed before the job "
                                    "started); rerun the same command to launch it again")
            if self.settings.timeout_s and time.monotonic() - t0 > self.settings.timeout_s:
                self._ask(f"cancel job {job_id}", "cancel_job", job_id)
                raise TrainingError(f"TAO job {job_id} ran longer than adapter.tao.timeout_s "
                                    f"({self.settings.timeout_s:g} s) and was canceled")
            time.sleep(poll)

    def run(self, action: str, doc: dict[str, Any], results_dir: str | Path) -> Path:
        """Run ``action`` on ``doc`` (re-attaching to an existing job for the same folder) and return
        the action's output folder ``<results_dir>/<action>``.

        Raises:
            TrainingError: the job ended in Error/Canceled (with the log's last lines).
        """
        results_dir = Path(results_dir).resolve()
        doc = {**doc, "results_dir": str(results_dir)}
        job_id = self.find(action, doc, results_dir)
        if job_id is not None:
            status = self.status(job_id)
            if status in ("Error", "Canceled", "Orphaned") or \
                    (status == "Complete" and not (results_dir / action).is_dir()):
                job_id = None  # failed, never started, or its results were removed since: run it again
        if job_id is None:
            job_id = self.launch(action, doc, results_dir)
        status = self.wait(job_id)
        if status != "Complete":
            tail = (self._ask(f"read the log of job {job_id}", "get_job_logs", job_id, tail=15) or "").strip()
            raise TrainingError(f"TAO {action} job {job_id} ended {status} ({self.settings.platform}); "
                                f"last log lines:\n{tail}")
        return results_dir / action


__all__ = ["KUBERNETES_REFUSAL", "LEDGER", "STANDIN", "TaoJobs", "docker_mounts", "make_sdk",
           "platform_packages_missing", "script_path", "sdk_missing_message", "sdk_reason", "slurm_mounts", "state_root",
           "venv_path"]
