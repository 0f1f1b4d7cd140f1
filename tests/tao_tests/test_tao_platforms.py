"""The three phases and the kill -9 / re-attach rule on a real docker daemon and a real Slurm cluster.

Marked ``tao_docker`` / ``tao_slurm``; ``.ci/services.sh`` starts the services (CI fails instead of
skipping when they are missing: DEFTPIPE_REQUIRE_SERVICES=1). What the jobs run is the local stand-in
image (``_image.py``): TAO's CLI and file contract, deftpipe's CNN — not TAO's model.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from deftpipe.pipeline import run_pipeline
from deftpipe.spec import dump_spec, load_spec
from deftpipe.tao import TaoAdapter, make_sdk

from ._platforms import adopt, platform_env, platform_image
from ._tao_ws import SPLIT_CSVS

#: one xdist worker runs this module: each test removes the finished containers it made, and a test
#: on the other worker would otherwise see its containers removed mid-count
pytestmark = pytest.mark.xdist_group("tao_platforms")

@pytest.fixture(autouse=True)
def _remove_finished_containers():
    """The SDK keeps finished containers (its record of their exit); a test's are removed after it."""
    def ours() -> set[str]:
        res = subprocess.run(["docker", "ps", "-aq", "--filter", "label=tao-sdk-job-id", "--filter", "status=exited"],
                             capture_output=True, text=True, check=False)
        return set(res.stdout.split()) if res.returncode == 0 else set()

    before = ours() if shutil.which("docker") else set()
    yield
    new = ours() - before if shutil.which("docker") else set()
    if new:
        subprocess.run(["docker", "rm", *sorted(new)], capture_output=True, check=False)


PLATFORMS = [pytest.param("docker", marks=pytest.mark.tao_docker),
             pytest.param("slurm", marks=pytest.mark.tao_slurm)]


def _owned_by_me(root: Path) -> list[str]:
    """Files and folders under ``root`` that do not belong to this process's user and group."""
    me = (os.getuid(), os.getgid())
    return [str(p) for p in [root, *root.rglob("*")] if not p.is_symlink() and (p.stat().st_uid, p.stat().st_gid) != me]


def _container_specs(ws: Path, action: str) -> list[dict]:
    """The TAO specs deftpipe handed to the container jobs (written beside each job's results)."""
    return [yaml.safe_load(p.read_text()) for p in ws.rglob(f"{action}_experiment.yaml")]


def _backend_jobs(platform: str, job_ids: set[str]) -> int:
    """How many containers (docker) or batch jobs (Slurm) the platform itself holds for these SDK jobs."""
    if platform == "docker":
        out = subprocess.run(["docker", "ps", "-a", "--format", '{{.Label "tao-sdk-job-id"}}'],
                             capture_output=True, text=True, check=True).stdout.split()
    else:
        out = subprocess.run(["squeue", "-h", "-t", "all", "-o", "%j"], capture_output=True, text=True,
                             check=True).stdout.split()
    return sum(1 for x in out if any(j in x for j in job_ids))


def _most_backend_jobs_per_job(platform: str, job_ids: set[str]) -> int:
    """The most containers / batch jobs any one of these SDK jobs has on the platform (1 = launched once)."""
    return max((_backend_jobs(platform, {j}) for j in job_ids), default=0)


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_tao_platform_runs_all_three_phases(platform, tao_src, tmp_path, monkeypatch):
    image = platform_image(platform)
    platform_env(platform, tmp_path / "ws", monkeypatch)
    ws = tmp_path / "ws"
    adopt(platform, tao_src, ws, image)
    cfg = yaml.safe_load((ws / "pipeline.yaml").read_text())
    (ws / "specs" / "tao_search_space.yaml").write_text(
        "train.optim.lr: {type: float, low: 0.0006, high: 0.001}\n"
        "train.optim.policy: {type: categorical, choices: [linear]}\n")
    for phase in ("phase1", "phase3"):
        cfg["automl"][phase].update(max_recommendations=1, num_epochs=2, per_trial_seconds=20.0)
    cfg["deft"].update(max_iterations=1, num_epochs=1, per_iteration_seconds=30.0, regression_gate_pct=None)
    cfg["kpi"].update(operator="<", target=0.0)  # never met: the loop runs its iteration
    (ws / "pipeline.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))

    src = tao_src[0]
    before = sorted(p for p in src.parent.rglob("*"))
    result = run_pipeline(ws, yes=True, show_progress=False)
    assert sorted(p for p in src.parent.rglob("*")) == before  # the TAO workspace gained no file
    assert result["status"] == "complete", result
    run = Path(result["results_dir"])
    labels = [p["label"] for p in result["trajectory"]]
    assert [x for x in labels if x != "reference"] == ["phase1", "baseline", "iter1", "final_automl"]
    state = json.loads((run / "deft_state.json").read_text())
    for label in ("baseline", "iter1", "final_automl"):
        it = state["iterations"][label]
        assert isinstance(it["far_pct"], float) and Path(it["best_ckpt_path"]).is_file()
    # every model and every score came from a job on the platform, each launched once
    jobs = make_sdk(load_spec(ws / "specs" / "baseline_spec.yaml").adapter.tao).list_jobs()
    assert jobs and all(r["status"] == "Complete" and r["backend_type"] == platform for r in jobs)
    ledgers = [json.loads(p.read_text()) for p in ws.rglob("tao_job.json")]  # (scratch folders are gone)
    assert len(ledgers) >= len(jobs) - 2 and {r["job_id"] for r in ledgers} <= {r["job_id"] for r in jobs}
    assert len({r["job_id"] for r in ledgers}) == len(ledgers) and all(r["platform"] == platform for r in ledgers)
    # never a second container / batch job for one SDK job (on CI 3-4 of docker's 13 finished containers
    # were already gone when counted, cause not found: the count is per job, not the total)
    assert _most_backend_jobs_per_job(platform, {r["job_id"] for r in jobs}) == 1
    assert _backend_jobs(platform, {r["job_id"] for r in jobs}) >= len(jobs) // 2
    trains = _container_specs(ws, "train")
    assert len(trains) >= 3  # Phase 1 (+ its checks), the DEFT iteration, Phase 3
    assert len([t for t in trains if t["train"]["pretrained_model_path"]]) == 2  # DEFT retrain, Phase 3 trial
    # what the containers wrote belongs to the user who ran deftpipe (the image's own user is 65534)
    assert _owned_by_me(ws) == []
    assert (run / "best_model.json").is_file() and (run / "pipeline_summary.md").is_file()


_TRAIN_IN_CHILD = """
import sys
import deftpipe.tao  # registers adapter.kind tao (the deftpipe command does this itself)
from deftpipe.model import get_adapter
from deftpipe.spec import load_spec
spec = load_spec(sys.argv[1])
r = get_adapter(spec).train(spec, sys.argv[2], sys.argv[3], sys.argv[4])
print("DONE", r.best_checkpoint)
"""


@pytest.mark.slow
@pytest.mark.parametrize("platform", PLATFORMS)
def test_tao_platform_killed_run_reattaches_to_its_running_job(platform, tao_src, tmp_path, monkeypatch):
    """kill -9 deftpipe while its container (docker) / batch job (Slurm) trains; the rerun waits for
    that job: one SDK job, one container or batch job, the ledger's id."""
    image = platform_image(platform)
    ws = tmp_path / "ws"
    platform_env(platform, ws, monkeypatch)
    adopt(platform, tao_src, ws, image)
    spec = load_spec(ws / "specs" / "baseline_spec.yaml")
    spec.train.num_epochs = 4
    spec_file = dump_spec(spec, ws / "kill_spec.yaml")
    src, out = tao_src[0], ws / "results" / "killed"
    args = [str(spec_file), str(src / SPLIT_CSVS["train"]), str(src / SPLIT_CSVS["val"]), str(out)]
    child = subprocess.Popen([sys.executable, "-c", _TRAIN_IN_CHILD, *args], start_new_session=True,
                             env=dict(os.environ))
    status = out / "tao" / "train" / "status.json"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and not status.is_file():  # the trainer runs inside the job
        assert child.poll() is None, "deftpipe ended before its job started"
        time.sleep(0.2)
    assert status.is_file(), "the job never started"
    os.killpg(child.pid, signal.SIGKILL)  # deftpipe dies; the container / batch job does not
    child.wait()
    sdk = make_sdk(spec.adapter.tao)
    jobs = sdk.list_jobs()
    assert len(jobs) == 1 and jobs[0]["status"] in ("Pending", "Running")
    result = TaoAdapter(spec).train(spec, *args[1:])  # the resume
    jobs = make_sdk(spec.adapter.tao).list_jobs()
    assert [j["status"] for j in jobs if j["backend_type"] == platform][:1] == ["Complete"]
    train_jobs = [j for j in jobs if j["job_id"] == json.loads((out / "tao" / "tao_job.json").read_text())["job_id"]]
    assert len(train_jobs) == 1
    assert _backend_jobs(platform, {train_jobs[0]["job_id"]}) == 1  # never a second container / batch job
    assert result.best_epoch == 4 and result.best_checkpoint.is_file()
    assert _owned_by_me(out) == []


@pytest.mark.tao_docker
def test_tao_docker_dry_run_is_one_job_of_each_kind_inside_the_mounts(tao_src, tmp_path, monkeypatch):
    """The pre-flight's estimate on a container platform: one training job (+ its validation scoring) and
    one scoring job, their inputs under the job store (a mount), nothing under the system temp folder."""
    import glob
    import tempfile

    from deftpipe.pipeline import preflight

    image = platform_image("docker")
    ws = tmp_path / "ws"
    platform_env("docker", ws, monkeypatch)
    adopt("docker", tao_src, ws, image)
    systmp = tmp_path / "system_tmp"  # this process's temp folder, so other processes' files do not count
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    report = preflight(ws, measure=True)
    assert report["ok"], report["blockers"]
    est = next(s for s in report["sections"] if s["name"] == "estimate")
    assert est["rates"]["source"] == "one real job of each kind"
    assert "-row training job" in est["assumes"] and "per-job cost" in est["assumes"]
    jobs = make_sdk(load_spec(ws / "specs" / "baseline_spec.yaml").adapter.tao).list_jobs()
    assert len(jobs) == 3  # the training job, its validation scoring, one scoring job
    assert all(j["status"] == "Complete" and j["backend_type"] == "docker" for j in jobs)
    assert glob.glob(f"{systmp}/deftpipe_*") == []  # the dry run's inputs were in the job store, not here
    assert not (ws / "results").exists() or not any((ws / "results").iterdir())  # nothing before approval
