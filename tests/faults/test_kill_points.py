"""kill -9 at 27 points of one three-phase run — every phase boundary, each hand-off step, inside the
Phase 1 and Phase 3 sweeps (a trial is training), and inside or right after the DEFT loop's stages —
each followed by a rerun that resumes. The finished run has the same artefacts as an uninterrupted
run of the same workspace, no duplicate trial, row or event, and every state file parsed as valid
JSON at every instant the watcher looked (every 20 ms of every run).

Two chains, each computed once per session (tests/faults/conftest.py): the killed one and the
uninterrupted reference; each kill point is its own test of what that run left behind.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import optuna
import pytest
from pipeline_tests._workspaces import make_easy_ws

from deftpipe.data import identity_keys, read_dataset

from .conftest import CLI, computed_once, env, run_watched

pytestmark = pytest.mark.slow
CHAIN = pytest.mark.xdist_group("kill_chain")  # with --dist loadgroup (pyproject): one worker runs the chain

#: (how, where): "at" = DEFTPIPE_FAULT_AT (pipeline points), "after" = DEFTPIPE_FAULT_AFTER (right after
#: a loop stage's commit), "in" = DEFTPIPE_FAULT_IN (inside a loop stage), "sigkill" = this test sends
#: SIGKILL once the glob (relative to the run folder) matches: a sweep trial is training.
SEQUENCE = [
    ("at", "approved"),
    ("at", "phase1.start"),
    ("sigkill", "automl/phase1/trials/*/*.pth"),
    ("at", "phase1.swept"),
    ("at", "phase1.done"),
    ("at", "handoff12.spec"),
    ("at", "handoff12.checkpoint"),
    ("at", "handoff12.preseeded"),
    ("at", "phase2.start"),
    ("in", "baseline:evaluate"),  # the pipeline pre-seeds the baseline's KPI scores: no inference stage runs
    ("after", "baseline:evaluate"),
    ("in", "baseline:rca"),
    ("in", "iter1:routing"),
    ("in", "iter1:sdg"),
    ("after", "iter1:sdg"),
    ("in", "iter1:mining"),
    ("in", "iter1:data_merge"),
    ("in", "iter1:train"),
    ("in", "iter1:evaluate"),
    ("at", "phase2.done"),
    ("at", "phase3.start"),
    ("sigkill", "final_automl/trials/*/*.pth"),
    ("at", "phase3.swept"),
    ("at", "phase3.evaluated"),
    ("at", "phase3.recorded"),
    ("at", "phase3.done"),
    ("at", "summary"),
]
HOOK = {"at": "DEFTPIPE_FAULT_AT", "after": "DEFTPIPE_FAULT_AFTER", "in": "DEFTPIPE_FAULT_IN"}


def _run_dirs(ws: Path) -> list[Path]:
    return sorted((ws / "results").glob("run_*"))


def _kill_chain(folder: Path) -> dict[str, Any]:
    ws = make_easy_ws(folder, multiclass=False)
    log = folder / "runs.log"
    points = []
    for how, where in SEQUENCE:
        if how == "sigkill":
            seen = run_watched([*CLI, "run", str(ws), "--yes"], env_=env(), ws=ws, log=log,
                               kill_when=lambda w=where: any((ws / "results").glob(f"run_*/{w}")))
        else:
            seen = run_watched([*CLI, "run", str(ws), "--yes"], env_=env(**{HOOK[how]: where}), ws=ws, log=log)
        record = json.loads((_run_dirs(ws)[0] / "pipeline_state.json").read_text()) if _run_dirs(ws) else {}
        seen.update(how=how, where=where, attempts=record.get("attempts"), runs=len(_run_dirs(ws)),
                    phases={p: v.get("status") for p, v in record.get("phases", {}).items()})
        points.append(seen)
    final = run_watched([*CLI, "run", str(ws), "--yes"], env_=env(), ws=ws, log=log)
    return {"points": points, "final": final, "summary": summarise(ws), "log": log.read_text()[-4000:]}


def _reference(folder: Path) -> dict[str, Any]:
    ws = make_easy_ws(folder, multiclass=False)
    out = subprocess.run([*CLI, "run", str(ws), "--yes"], env=env(), capture_output=True, text=True, timeout=900)
    return {"rc": out.returncode, "err": out.stderr[-3000:], "summary": summarise(ws)}


def _files(run: Path) -> list[str]:
    """Every artefact's path in the run folder, except logs, locks and the per-trial folders (a killed
    trial is retried under a new number; the trials are compared by count below)."""
    skip_parts = {"trials"}
    # Phase 1's winner is scored on the KPI set only when it is not the user's spec's trial; a killed
    # and retried user's-spec trial gets a later number, so a tie can rank another trial first
    optional = {"automl/phase1/winner_inference_kpi.csv"}
    return sorted(str(p.relative_to(run)) for p in run.rglob("*") if p.is_file()
                  and str(p.relative_to(run)) not in optional
                  and not (set(p.relative_to(run).parts) & skip_parts)
                  and not p.name.endswith((".log", ".lock")) and p.name != "study.db-wal" and p.name != "study.db-shm")


def summarise(ws: Path) -> dict[str, Any]:
    runs = _run_dirs(ws)
    if len(runs) != 1:
        return {"runs": len(runs)}
    run = runs[0]
    state = json.loads((run / "deft_state.json").read_text())
    record = json.loads((run / "pipeline_state.json").read_text())
    studies = {}
    for sub, phase in (("automl/phase1", "phase1"), ("final_automl", "phase3")):
        trials = optuna.load_study(study_name=f"{run.name}-{phase}",
                                   storage=f"sqlite:///{run / sub / 'study.db'}").get_trials(deepcopy=False)
        rec_ids = [r["rec_id"] for r in json.loads((run / sub / "best_rec.json").read_text())["all_recs"]]
        studies[phase] = {"complete": sum(t.state == optuna.trial.TrialState.COMPLETE for t in trials),
                          "unique_numbers": len({t.number for t in trials}) == len(trials),
                          "unique_recs": len(rec_ids) == len(set(rec_ids))}
    combined = read_dataset(run / "iter1" / "dataset" / "train_combined_iter1.csv")
    base = read_dataset(ws / "train" / "base" / "training_set.csv")
    done = [(e["iter"], e["stage"]) for e in state["events"] if e["status"] in ("ok", "done", "complete")]
    # the user's spec is Phase 1's first trial (or its retry, when a SIGKILL hit trial_000); its
    # checkpoint is kept and scored on the KPI set as the reference
    ref = record["phases"]["phase1"].get("reference") or {}
    recs = {r["rec_id"]: r for r in json.loads((run / "automl/phase1/best_rec.json").read_text())["all_recs"]}
    improvement = json.loads((run / "trajectory.json").read_text()).get("improvement") or {}
    reference_ok = bool(ref) and bool(recs.get("trial_000", {}).get("enqueued_from")) and bool(
        recs.get(ref.get("rec_id"), {}).get("enqueued_from")) and Path(ref.get("checkpoint", "")).is_file() and (
        Path(ref["checkpoint"]).parent == run / "reference" / "train") and ref.get("far_pct") is not None and (
        improvement.get("reference_step") == "user spec (KPI)") and improvement.get("deliverable") == json.loads(
        (run / "best_model.json").read_text())["far_pct"]
    return {
        "reference_ok": reference_ok,
        "runs": 1,
        "files": _files(run),
        # (a kill -9 in the middle of an atomic write leaves its temp sibling: never under the final
        # name, and a killed trial's folder is not reused; everywhere else a resumed stage clears it)
        "tmp_files": [str(p) for p in [*run.rglob("*.tmp"), *run.rglob("*.partial")] if "trials" not in p.parts],
        "status": record["status"], "attempts": record["attempts"],
        "phases": {p: v["status"] for p, v in record["phases"].items()},
        "loop": {k: {"source": v.get("source"), "stage_completed": v.get("stage_completed")}
                 for k, v in state["iterations"].items()},
        "loop_status": state["status"],
        "studies": studies,
        "combined_rows": len(combined),
        "combined_duplicates": int(identity_keys(combined).duplicated().sum()),
        "base_rows_kept": set(identity_keys(base)) <= set(identity_keys(combined)),
        "stage_events": sorted(set(done)), "duplicate_stage_events": len(done) - len(set(done)),
        "trajectory": [p["label"] for p in json.loads((run / "trajectory.json").read_text())["points"]],
    }


@pytest.fixture(scope="module")
def chain(shared_dir) -> dict[str, Any]:
    return computed_once(shared_dir, "kill_chain", _kill_chain)


@pytest.fixture(scope="module")
def reference(shared_dir) -> dict[str, Any]:
    return computed_once(shared_dir, "reference_run", _reference)


@pytest.mark.xdist_group("reference_run")  # another worker may run the reference meanwhile
def test_uninterrupted_reference_run_completes(reference):
    assert reference["rc"] == 0, reference["err"]
    assert reference["summary"]["status"] == "complete"


@CHAIN
@pytest.mark.parametrize("n", range(len(SEQUENCE)), ids=[f"{h}-{w}" for h, w in SEQUENCE])
def test_kill_9_then_state_is_valid(chain, n):
    p = chain["points"][n]
    assert p["rc"] in (137, -9), f"not killed at {p['how']} {p['where']} (exit {p['rc']}):\n{chain['log']}"
    assert not p["bad_json"] and not p["bad_json_after"], p["bad_json"][:3] + p["bad_json_after"][:3]
    assert p["checks"] > 0
    assert p["runs"] == 1, "a resume must not start a new run folder"
    assert p["attempts"] == n + 1  # every rerun resumed the same record


@CHAIN
def test_rerun_after_every_kill_finishes_with_identical_artefacts(chain, reference):
    final, got, want = chain["final"], chain["summary"], reference["summary"]
    assert final["rc"] == 0, chain["log"]
    assert not final["bad_json"] and not final["bad_json_after"]
    assert got["attempts"] == len(SEQUENCE) + 1
    assert got["tmp_files"] == []
    assert got["combined_duplicates"] == 0 and got["duplicate_stage_events"] == 0 and got["base_rows_kept"]
    for s in got["studies"].values():
        assert s["unique_numbers"] and s["unique_recs"]
    for key in ("files", "status", "phases", "loop", "loop_status", "studies", "combined_rows", "stage_events",
                "trajectory", "reference_ok"):
        assert got[key] == want[key], (key, set(got[key]) ^ set(want[key]) if key == "files" else (got[key], want[key]))
