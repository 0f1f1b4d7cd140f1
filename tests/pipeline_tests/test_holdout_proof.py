"""Proof that nothing but the audit reads the holdout (docs/contracts.md §11).

Two full runs of the pipeline on the same workspace, the second after the holdout's labels and images
were changed: every artefact written before the audit is byte-identical (clock fields aside), and
the audit — the last stage — is the only thing that differs.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from deftpipe import deft
from deftpipe.cli import app
from deftpipe.pipeline import _run, run_pipeline

pytestmark = pytest.mark.slow

#: Written at or after the audit: checked separately below.
AFTER_AUDIT = {"audit", "best_model.json", "pipeline_state.json", "pipeline_summary.md", "trajectory.json",
               "report.html", "report_extra.json"}
#: Fields that hold wall-clock time (when, how long), not outcomes: ``ts``, ``*_at``, ``*seconds*``, ``duration*``.
CLOCK = re.compile(r"^(ts|.*_at|.*seconds.*|duration.*|t_start_unix)$")
TEMP = re.compile(r"deftpipe_untrained_\w+")  # Phase 1's throw-away untrained model lives in a temp folder


def _fast(ws: Path) -> None:
    cfg = yaml.safe_load((ws / "pipeline.yaml").read_text())
    for phase in ("phase1", "phase3"):
        cfg["automl"][phase].update(max_recommendations=2, num_epochs=1, per_trial_seconds=1.0)
    cfg["deft"].update(max_iterations=1, num_epochs=1, per_iteration_seconds=1.0)
    (ws / "pipeline.yaml").write_text(yaml.safe_dump(cfg))


def _tamper(ws: Path) -> None:
    """Flip every holdout label (PASS <-> a defect) and invert every holdout test image."""
    csv = ws / "holdout" / "holdout_set.csv"
    df = pd.read_csv(csv, dtype=str, keep_default_na=False)
    df["label"] = ["open" if lab == "PASS" else "PASS" for lab in df["label"]]
    df.to_csv(csv, index=False)
    for png in (ws / "images").glob("holdout_board*/test/*.png"):
        with Image.open(png) as im:
            Image.eval(im, lambda v: 255 - v).save(png)


def _clean(obj):
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items() if not CLOCK.match(str(k))}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    if isinstance(obj, str):
        return TEMP.sub("deftpipe_untrained_<tmp>", obj)
    if isinstance(obj, torch.Tensor):
        return obj.numpy().tobytes()
    return obj


def _read(p: Path) -> object:
    if p.suffix == ".json":
        return _clean(json.loads(p.read_text()))
    if p.suffix == ".pth":  # weights byte for byte, the rest without its clock fields
        return _clean(torch.load(p, weights_only=True))
    return p.read_bytes()


def _artefacts(run: Path) -> dict[str, object]:
    """Every file of the run written before the audit: JSON and checkpoints without clock fields, the
    rest (CSVs, NPZ, YAML, HTML of the loop's report) as bytes."""
    out: dict[str, object] = {}
    for p in sorted(run.rglob("*")):
        rel = p.relative_to(run)
        storage = ".db" in p.name  # the Optuna storage (+ -wal/-shm) holds timestamps; its trials are in best_rec.json
        status = p.name == "progress.json"  # a sweep's live status (trial n of N, times, an estimate): no outcome
        if (not p.is_file() or rel.parts[0] in AFTER_AUDIT or storage or status or p.suffix == ".lock"
                or p.name.startswith(".")):
            continue
        out[str(rel)] = _read(p)
    return out


def _run_once(ws: Path, monkeypatch) -> Path:
    monkeypatch.setattr(_run, "new_run_folder", lambda w, create=False: Path(w).resolve() / "results" / "run_fixed")
    return Path(run_pipeline(ws, yes=True, show_progress=False)["results_dir"])


def test_changing_the_holdout_changes_nothing_before_the_audit(tiny_ws, tmp_path, monkeypatch):
    _fast(tiny_ws)
    pristine = tmp_path / "pristine"
    shutil.copytree(tiny_ws, pristine, symlinks=True)
    run_a = _run_once(tiny_ws, monkeypatch)
    a = _artefacts(run_a)
    best_a = json.loads((run_a / "best_model.json").read_text())
    shutil.move(tiny_ws, tmp_path / "run_a_ws")
    shutil.copytree(pristine, tiny_ws, symlinks=True)  # the same path, so the same absolute paths
    _tamper(tiny_ws)
    run_b = _run_once(tiny_ws, monkeypatch)
    b = _artefacts(run_b)
    best_b = json.loads((run_b / "best_model.json").read_text())

    assert a.keys() == b.keys() and len(a) > 20
    assert any(k.endswith(".pth") for k in a) and any(k.endswith(".csv") for k in a)
    changed = [k for k in a if a[k] != b[k]]
    assert not changed, f"written before the audit, yet changed with the holdout: {changed}"
    assert {k: v for k, v in best_a.items() if k != "audit"} == {k: v for k, v in best_b.items() if k != "audit"}
    # ... while the audit did read the changed holdout
    audit_a, audit_b = best_a["audit"], best_b["audit"]
    assert audit_a["done"] and audit_b["done"]
    assert audit_a["threshold"] == audit_b["threshold"] == best_a["threshold"]
    assert (audit_a["n_defects"], audit_a["n_pass"]) == (audit_b["n_pass"], audit_b["n_defects"])
    assert deft.write_best_model(run_b)["audit"] == audit_b  # a recomputed hand-off keeps the same model's audit
    again = CliRunner().invoke(app, ["audit", str(run_b), "--json"])  # `deftpipe audit RUN_DIR` says the same
    assert again.exit_code == 0, again.output
    assert {k: json.loads(again.stdout)[k] for k in ("far_pct", "recall_pct", "escapes")} == {
        k: audit_b[k] for k in ("far_pct", "recall_pct", "escapes")}
    summary = (run_b / "pipeline_summary.md").read_text()
    assert "selection (KPI set)" in summary and "audit (holdout, never used for a choice)" in summary
    html = (run_b / "report.html").read_text()
    assert 'id="selection-vs-audit"' in html and "data:image/png;base64," in html
