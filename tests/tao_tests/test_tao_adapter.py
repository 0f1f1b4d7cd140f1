"""The tao adapter end to end through nvidia-tao-sdk's VirtualEnvSDK and the stand-in trainer script."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deftpipe.errors import TrainingError
from deftpipe.metrics import compute_metrics
from deftpipe.model import get_adapter
from deftpipe.spec import dump_spec
from deftpipe.tao import TaoAdapter, make_sdk

from ._tao_ws import SPLIT_CSVS


def _jobs(spec, action=None):
    rows = make_sdk(spec.adapter.tao).list_jobs()
    return [r for r in rows if action is None or r["action"] == action]


@pytest.fixture(scope="module")
def tao_trained(tao_src, tmp_path_factory):
    """One 2-epoch TAO train (stand-in) + its validation scoring: (spec, result, out_dir)."""
    from deftpipe.spec import load_spec

    spec = load_spec(tao_src[1])
    spec.adapter.tao.state_dir = str(tmp_path_factory.mktemp("tao_state"))
    spec.adapter.tao.poll_s = 0.1
    src = tao_src[0]
    out = tmp_path_factory.mktemp("tao_train") / "run"
    seen: list[int] = []
    result = get_adapter(spec).train(spec, src / SPLIT_CSVS["train"], src / SPLIT_CSVS["val"], out,
                                     epoch_callback=lambda e, m: seen.append(e) and False)
    return spec, result, out, seen


def test_tao_train_follows_the_tao_file_contract(tao_trained):
    spec, result, out, seen = tao_trained
    folder = out / "tao" / "train"
    names = sorted(p.name for p in folder.glob("*.pth"))
    assert names == ["model_epoch_000_step_00007.pth", "model_epoch_001_step_00014.pth"]  # 0-based epochs
    assert result.best_checkpoint == folder / names[-1] and (result.best_epoch, result.best_step) == (2, 14)
    ckpt = torch.load(result.best_checkpoint, map_location="cpu", weights_only=True)
    assert ckpt["epoch"] == 1 and ckpt["global_step"] == 14
    assert ckpt["state_dict"] and all(k.startswith("model.") for k in ckpt["state_dict"])
    lines = [json.loads(x) for x in (folder / "status.json").read_text().splitlines()]
    assert lines[0]["status"] == "STARTED" and lines[-1]["status"] == "SUCCESS"
    assert [x["epoch"] for x in lines if "kpi" in x] == [0, 1] and "val_loss" in lines[1]["kpi"]
    assert seen == [1, 2] and result.epochs_run == 2
    assert len(_jobs(spec, "train")) == 1


def test_tao_scores_come_from_siamese_score_and_deftpipe_metric(tao_src, tao_trained):
    spec, result, _, _ = tao_trained
    kpi = tao_src[0] / SPLIT_CSVS["kpi"]
    m = TaoAdapter(spec).evaluate(result.best_checkpoint, kpi)
    runs = [r for r in _jobs(spec, "inference")
            if json.loads(r["specs"])["dataset"]["classify"]["infer_dataset"]["csv_path"] == str(kpi)]
    assert len(runs) == 1
    scored = pd.read_csv(Path(json.loads(runs[0]["specs"])["results_dir"]) / "inference" / "inference.csv")
    assert list(scored.columns[:4]) == ["input_path", "golden_path", "label", "object_name"]
    expected = compute_metrics((scored["label"] != "PASS").to_numpy(), scored["siamese_score"].to_numpy(),
                               labels=scored["label"].tolist())
    assert m["far_pct"] == expected["far_pct"] and m["n_defects"] == 24 and m["n_pass"] == 12
    assert m["auroc"] > 0.7  # a real model learnt the easy task: scores mean something
    assert result.metrics["far_pct"] == pytest.approx(result.history[-1]["far_pct"])


def test_tao_inference_reattaches_to_the_finished_job(tao_src, tao_trained, tmp_path):
    spec, result, _, _ = tao_trained
    val = tao_src[0] / SPLIT_CSVS["val"]
    before = len(_jobs(spec, "inference"))
    out = TaoAdapter(spec).infer(result.best_checkpoint, val, tmp_path / "scores.csv")
    df = pd.read_csv(out)
    assert {"score", "prediction", "siamese_score"} <= set(df.columns)
    assert len(_jobs(spec, "inference")) == before  # training already scored val with this checkpoint
    emb, scores = TaoAdapter(spec).embed_and_score(result.best_checkpoint, val)
    assert emb.shape == (len(df), 64) and np.allclose(np.linalg.norm(emb, axis=1), 1, atol=1e-5)
    assert np.allclose(scores, df["score"]) and len(_jobs(spec, "inference")) == before


def test_tao_warm_start_passes_the_checkpoint_to_tao(tao_src, tao_trained, tmp_path):
    spec, result, _, _ = tao_trained
    src = tao_src[0]
    spec = spec.model_copy(deep=True)
    spec.train.num_epochs = 1
    spec.train.optim.lr *= 0.3  # as DEFT's warm-started retrains do (deft.warm_start_lr_scale)
    r2 = TaoAdapter(spec).train(spec, src / SPLIT_CSVS["train"], src / SPLIT_CSVS["val"], tmp_path / "warm",
                                pretrained=result.best_checkpoint)
    row = next(r for r in _jobs(spec, "train") if json.loads(r["specs"])["results_dir"] == str(tmp_path / "warm" / "tao"))
    assert json.loads(row["specs"])["train"]["pretrained_model_path"] == str(result.best_checkpoint)
    assert r2.best_epoch == 1 and r2.metrics["auroc"] > 0.7


def test_tao_failed_job_is_one_clear_error(tao_src, tao_spec, tmp_path):
    bad = tmp_path / "bad_trainer.py"
    bad.write_text("import sys\nprint('CUDA out of memory (simulated)')\nsys.exit(3)\n")
    tao_spec.adapter.tao.script = str(bad)
    src = tao_src[0]
    with pytest.raises(TrainingError, match=r"TAO train job .* ended Error \(virtualenv\)(.|\n)*out of memory"):
        TaoAdapter(tao_spec).train(tao_spec, src / SPLIT_CSVS["train"], src / SPLIT_CSVS["val"], tmp_path / "o")


_TRAIN_IN_CHILD = """
import sys
import deftpipe.tao  # registers adapter.kind tao (the deftpipe command does this itself)
from deftpipe.model import get_adapter
from deftpipe.spec import load_spec
spec = load_spec(sys.argv[1])
r = get_adapter(spec).train(spec, sys.argv[2], sys.argv[3], sys.argv[4])
print("DONE", r.best_checkpoint)
"""


def test_tao_killed_run_reattaches_to_its_running_job(tao_src, tao_spec, tmp_path):
    """kill -9 deftpipe while its TAO train job runs; the rerun waits for that job, never a second one."""
    src = tao_src[0]
    tao_spec.train.num_epochs = 3
    spec_file = dump_spec(tao_spec, tmp_path / "spec.yaml")
    out = tmp_path / "run"
    args = [str(spec_file), str(src / SPLIT_CSVS["train"]), str(src / SPLIT_CSVS["val"]), str(out)]
    child = subprocess.Popen([sys.executable, "-c", _TRAIN_IN_CHILD, *args], start_new_session=True)
    deadline, sdk = time.monotonic() + 60, make_sdk(tao_spec.adapter.tao)
    # until the job's own process runs (killed earlier, the launcher leaves an orphan: next test)
    while time.monotonic() < deadline and not any(
            sdk.get_job_status(j["job_id"]).message.startswith("Process ") for j in _jobs(tao_spec, "train")):
        time.sleep(0.05)
    os.killpg(child.pid, signal.SIGKILL)  # deftpipe dies; the SDK's job runs in its own session
    child.wait()
    jobs = _jobs(tao_spec, "train")
    assert len(jobs) == 1 and jobs[0]["status"] in ("Pending", "Running")
    result = TaoAdapter(tao_spec).train(tao_spec, *args[1:])  # the resume
    jobs = _jobs(tao_spec, "train")
    assert len(jobs) == 1 and jobs[0]["status"] == "Complete"
    assert result.best_epoch == 3 and result.best_checkpoint.is_file()
    assert json.loads((out / "tao" / "tao_job.json").read_text())["job_id"] == jobs[0]["job_id"]


def test_tao_orphaned_job_is_an_error_then_launched_again(tao_src, tao_spec, tmp_path, monkeypatch):
    """A job the SDK keeps Pending because its launcher died before the job started never ends:
    waiting for it stops with one clear error, and the rerun launches the action again."""
    from types import SimpleNamespace

    from deftpipe.tao import TaoJobs

    jobs = TaoJobs(tao_spec.adapter.tao)
    orphan = SimpleNamespace(status="Pending", message="Python launcher identity is unavailable; keeping the job "
                                                      "non-terminal for safe manual recovery")
    monkeypatch.setattr(type(jobs.sdk), "get_job_status", lambda self, job_id: orphan)
    assert jobs.status("any") == "Orphaned"
    with pytest.raises(TrainingError, match="lost its process.*rerun the same command"):
        jobs.wait("any")
    launched = []
    monkeypatch.setattr(TaoJobs, "find", lambda self, *a: "old-job")
    monkeypatch.setattr(TaoJobs, "launch", lambda self, *a: launched.append(a[0]) or "new-job")
    monkeypatch.setattr(TaoJobs, "wait", lambda self, job_id: "Complete" if job_id == "new-job" else "Orphaned")
    (tmp_path / "r" / "train").mkdir(parents=True)
    assert jobs.run("train", {"x": 1}, tmp_path / "r") == (tmp_path / "r" / "train").resolve()
    assert launched == ["train"]  # the orphan was not waited for


def test_tao_checkpoint_names_of_taos_own_lightning_module(tmp_path):
    """tao_pytorch_backend's TAOLightningModule (core/lightning/tao_lightning_module.py) saves
    ModelCheckpoint(filename='model_{epoch:03d}') with '_' as the equals sign and '.pth': model_epoch_000.pth,
    plus a `<checkpoint_filename>_latest.pth` link; the stand-in (and other TAO versions) add _step_SSSSS."""
    from deftpipe.tao import tao_checkpoints

    for name in ("model_epoch_000.pth", "model_epoch_001.pth", "model_epoch_002_step_00021.pth", "notes.pth",
                 "model_epoch_x.pth"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "changenet_model_classify_latest.pth").symlink_to(tmp_path / "model_epoch_001.pth")
    (tmp_path / "model_epoch_009.pth").symlink_to(tmp_path / "model_epoch_001.pth")  # a link is never "the last"
    assert [(e, s, p.name) for e, s, p in tao_checkpoints(tmp_path)] == [
        (0, 0, "model_epoch_000.pth"), (1, 0, "model_epoch_001.pth"), (2, 21, "model_epoch_002_step_00021.pth")]


def test_tao_standin_answers_evaluate_with_overrides_like_taos_cli(tao_src, tao_trained, tmp_path):
    """`visual_changenet evaluate -e SPEC key=value …`: the overrides win, TAO's test KPIs in status.json."""
    import yaml

    from deftpipe.tao import tao_experiment

    spec, result, _, _ = tao_trained
    doc = tao_experiment(spec, results_dir=tmp_path / "r", infer_csv=tao_src[0] / SPLIT_CSVS["kpi"],
                         checkpoint=result.best_checkpoint)
    (tmp_path / "e.yaml").write_text(yaml.safe_dump(doc))
    res = subprocess.run([sys.executable, "-m", "deftpipe.tao.standin", "evaluate", "-e", str(tmp_path / "e.yaml"),
                          f"evaluate.results_dir={tmp_path / 'ev'}", "model.classify.eval_margin=1000.0"],
                         capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr[-2000:]
    lines = [json.loads(x) for x in (tmp_path / "ev" / "status.json").read_text().splitlines()]
    kpi = next(x["kpi"] for x in lines if "kpi" in x)
    assert set(kpi) == {"test_acc", "test_fpr", "test_fnr", "defect_acc"}
    assert kpi["test_fpr"] == 0.0 and kpi["test_fnr"] == 1.0  # margin 1000: nothing is flagged
    assert lines[-1]["status"] == "SUCCESS" and not (tmp_path / "r" / "evaluate").exists()
