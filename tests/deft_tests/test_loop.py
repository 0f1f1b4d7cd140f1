"""The loop end to end on the tiny synthetic workspace: a full run, resume after kill -9,
a pre-seeded baseline, an empty pool and a pool that overlaps the validation set."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deftpipe.data import identity_keys, read_dataset
from deftpipe.deft import load_state, preseed_baseline, run_loop
from deftpipe.errors import DataError, StateError
from deftpipe.selection import RULE_FIGURE

ITER_STAGES = ["routing", "sdg", "mining", "data_merge", "train", "inference", "evaluate"]


def _stage_events(state):
    return [(e["iter"], e["stage"]) for e in state["events"] if e["iter"] != "run"]


def test_full_run_records_every_stage(finished_run, tiny_ws):
    state = load_state(finished_run)
    assert state["status"] == "complete"
    assert state["reason"] == "max_iterations (1) reached"
    it = state["iterations"]
    assert it["baseline"]["stage_completed"] == "rca" and it["baseline"]["status"] == "complete"
    assert it["iter1"]["stage_completed"] == "loop_stop"
    assert 0.0 <= it["iter1"]["far_pct"] <= 100.0
    assert _stage_events(state) == [("baseline", s) for s in ("train", "inference", "evaluate", "rca")] + [
        ("iter1", s) for s in ITER_STAGES] + [("iter1", "loop_stop")]
    assert all(e["duration_sec"] >= 0 for e in state["events"])
    train1 = next(e for e in state["events"] if (e["iter"], e["stage"]) == ("iter1", "train"))
    assert "warm start baseline (model_epoch_" in train1["summary"]  # the label it warm-started from
    assert it["iter1"]["warm_start"] == it["baseline"]["best_ckpt_path"]
    seeds = [yaml.safe_load(Path(it[lb]["train_spec"]).read_text())["train"]["seed"] for lb in ("baseline", "iter1")]
    assert seeds[1] == seeds[0] + 1  # each retrain a fresh draw, not a replay of the last one
    for sub in ("routing", "sdg", "mining", "dataset", "train", "inference", "evaluate"):
        assert (finished_run / "iter1" / sub).is_dir()
    best = json.loads((finished_run / "best_model.json").read_text())
    # the selection rule's pick (lowest KPI RULE_FIGURE, ties to the earlier), not the lowest far_pct
    want = "iter1" if it["iter1"][RULE_FIGURE] < it["baseline"][RULE_FIGURE] else "baseline"
    assert best["best_iteration"] == want and best["far_pct"] == it[want]["far_pct"]
    assert Path(best["checkpoint"]).is_file()
    assert (finished_run / "best_model_inference_spec.yaml").is_file()


def test_merged_set_grows_monotonically_without_leaks(finished_run, tiny_ws):
    it = load_state(finished_run)["iterations"]["iter1"]
    base = read_dataset(tiny_ws / "train/base/training_set.csv")
    combined = read_dataset(it["combined_training_csv"])
    assert list(identity_keys(combined)[: len(base)]) == list(identity_keys(base))  # carried over, in order
    assert len(combined) == len(base) + it["n_added_sdg"] + it["n_added_mined"]
    assert not identity_keys(combined).duplicated().any()
    assert set(combined["source"]) <= {"base_train", "sdg", "mining_pool"}
    held_out = set(identity_keys(read_dataset(tiny_ws / "train/base/validation_set.csv")))
    held_out |= set(identity_keys(read_dataset(tiny_ws / "kpi/testing_set.csv")))
    assert not identity_keys(combined).isin(held_out).any()
    prov = pd.read_csv(it["provenance_csv"])
    assert len(prov) == len(combined)
    assert set(prov["source"]) <= {"base_train", "sdg", "mining_pool"}
    assert json.loads(Path(finished_run / "iter1/dataset/merge_validation.json").read_text())["validation"] == "ok"


def _run_subprocess(ws: Path, results: Path, fault: str | None, *, hook: str = "DEFTPIPE_FAULT_AFTER"
                    ) -> subprocess.CompletedProcess:
    env = {**os.environ, "DEFTPIPE_FAULT_AFTER": "", "DEFTPIPE_FAULT_IN": "", hook: fault or ""}
    code = ("import sys; from deftpipe.deft import run_loop; "
            "run_loop(sys.argv[1], results_dir=sys.argv[2], max_iterations=1, show_progress=False)")
    return subprocess.run([sys.executable, "-c", code, str(ws), str(results)], env=env, capture_output=True,
                          text=True, timeout=600)


def test_resume_after_kill_at_stage_boundaries(ws_copy, finished_run):
    """kill -9 right after several commits; each rerun resumes at the next stage, no stage runs twice."""
    results = ws_copy / "results" / "run_killed"
    for fault in ("baseline:rca", "iter1:sdg", "iter1:train"):
        proc = _run_subprocess(ws_copy, results, fault)
        assert proc.returncode == 137, proc.stderr[-2000:]
        label, stage = fault.split(":")
        assert load_state(results)["iterations"][label]["stage_completed"] == stage
    proc = _run_subprocess(ws_copy, results, None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = load_state(results)
    assert state["status"] == "complete"
    assert _stage_events(state) == _stage_events(load_state(finished_run))  # each stage exactly once
    combined = read_dataset(state["iterations"]["iter1"]["combined_training_csv"])
    assert not identity_keys(combined).duplicated().any()
    full = load_state(finished_run)["iterations"]["iter1"]
    assert len(combined) == full["n_train_rows"]  # same artefacts as the uninterrupted run
    assert sorted(p.name for p in (results / "iter1").iterdir()) == sorted(p.name for p in (finished_run / "iter1").iterdir())


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_resume_after_kill_in_the_middle_of_every_stage(ws_copy, finished_run):
    """kill -9 inside each stage in turn (as soon as it has written its first file, or before its
    commit): every rerun redoes the cut stage from scratch, and the run ends with the same files,
    rows and stage record as an uninterrupted one, with no partial or temporary file left."""
    results = ws_copy / "results" / "run_killed_mid"
    stages = [f"baseline:{s}" for s in ("train", "inference", "evaluate", "rca")] + [f"iter1:{s}" for s in ITER_STAGES]
    for fault in stages:
        proc = _run_subprocess(ws_copy, results, fault, hook="DEFTPIPE_FAULT_IN")
        assert proc.returncode == 137, (fault, proc.stderr[-2000:])
        label, stage = fault.split(":")
        it = load_state(results)["iterations"].get(label, {})
        assert it.get("stage_completed") != stage, fault  # cut short: never recorded
    proc = _run_subprocess(ws_copy, results, None)
    assert proc.returncode == 0, proc.stderr[-2000:]
    state = load_state(results)
    assert state["status"] == "complete"
    assert _stage_events(state) == _stage_events(load_state(finished_run))  # each stage exactly once
    for label in ("baseline", "iter1"):
        assert _files(results / label) == _files(finished_run / label), label
    assert not [f for f in _files(results) if f.endswith(".tmp")]
    combined = read_dataset(state["iterations"]["iter1"]["combined_training_csv"])
    full = read_dataset(load_state(finished_run)["iterations"]["iter1"]["combined_training_csv"])
    assert not identity_keys(combined).duplicated().any()
    same_run = [k.replace("run_killed_mid", finished_run.name) for k in identity_keys(combined)]  # SDG paths
    assert sorted(same_run) == sorted(identity_keys(full))


def _preseed(ws: Path, finished_run: Path, name: str) -> Path:
    results = ws / "results" / name
    ckpt = Path(load_state(finished_run)["iterations"]["baseline"]["best_ckpt_path"])
    dest = results / "baseline" / "train" / ckpt.name
    dest.parent.mkdir(parents=True)
    dest.write_bytes(ckpt.read_bytes())
    preseed_baseline(results, workspace=ws, config=None, spec_path=ws / "specs/baseline_spec.yaml",
                     checkpoint=dest, train_metric=12.5)
    return results


def test_preseeded_baseline_skips_train(ws_copy, finished_run):
    results = _preseed(ws_copy, finished_run, "run_seeded")
    state = run_loop(ws_copy, results_dir=results, max_iterations=0, show_progress=False)
    assert state["status"] == "complete"
    base = state["iterations"]["baseline"]
    assert base["source"] == "automl_phase1" and base["train_metric"] == 12.5
    trains = [e for e in state["events"] if e["stage"] == "train"]
    assert len(trains) == 1 and trains[0]["summary"].startswith("pre-seeded from automl_phase1")
    assert base["far_pct"] == load_state(finished_run)["iterations"]["baseline"]["far_pct"]
    assert json.loads((results / "best_model.json").read_text())["best_iteration"] == "baseline"


def test_empty_pool_routes_everything_to_sdg(ws_copy, finished_run):
    pool = ws_copy / "mining/mining_pool.csv"
    pool.write_text(pool.read_text().splitlines()[0] + "\n")
    results = _preseed(ws_copy, finished_run, "run_empty_pool")
    state = run_loop(ws_copy, results_dir=results, max_iterations=1, show_progress=False)
    assert state["status"] == "complete"
    it = state["iterations"]["iter1"]
    assert it["mined_rows"] == 0 and it["n_mining_targets"] == 0
    assert it["sdg_rows"] > 0 and it["n_added_sdg"] == it["sdg_rows"]
    assert any("empty pool" in e["summary"] for e in state["events"] if e["stage"] == "mining")


def test_pool_overlapping_validation_is_a_hard_stop(ws_copy, finished_run):
    val = (ws_copy / "train/base/validation_set.csv").read_text().splitlines()
    pool = ws_copy / "mining/mining_pool.csv"
    pool.write_text(pool.read_text() + val[1] + "\n")
    results = _preseed(ws_copy, finished_run, "run_leaky_pool")
    with pytest.raises(DataError, match=r"mining pool mining_pool.csv shares 1 row\(s\) with the validation set"):
        run_loop(ws_copy, results_dir=results, max_iterations=1, show_progress=False)
    state = load_state(results)
    assert state["status"] == "failed"
    assert state["reason"].startswith("iter1/routing: mining pool") and state["hard_stop"] is True
    with pytest.raises(StateError, match="hard-stopped .*it is not resumed"):
        run_loop(ws_copy, results_dir=results, max_iterations=1, show_progress=False)
    assert state["iterations"]["iter1"].get("stage_completed") is None


def _merge_pool_rows(ws: Path, tmp: Path):
    from deftpipe.data import ImageLayout, write_dataset
    from deftpipe.deft import _merge

    added = read_dataset(ws / "mining/mining_pool.csv").head(3)
    new_csv = write_dataset(added, tmp / "new_rows.csv")
    return added, lambda: _merge.merge(
        previous_csv=ws / "train/base/training_set.csv", previous_is_base=True, previous_provenance=None,
        sdg_csv=new_csv, mined_csv=None, val_csv=ws / "train/base/validation_set.csv",
        kpi_csv=ws / "kpi/testing_set.csv", layout=ImageLayout.create(ws / "images"), out_dir=tmp / "dataset",
        iter_label="iter1")


def test_merge_decodes_added_rows_and_checks_carried_rows_exist(ws_copy, tmp_path):
    from deftpipe.deft._context import HardStop

    added, merge = _merge_pool_rows(ws_copy, tmp_path)
    assert merge().n_rows == len(read_dataset(ws_copy / "train/base/training_set.csv")) + 3
    bad = ws_copy / "images" / added.iloc[1]["input_path"] / f"{added.iloc[1]['object_name']}.png"
    bad.write_bytes(bad.read_bytes()[:50])  # an added row's image is truncated: decoded, refused
    with pytest.raises(HardStop, match=r"unreadable image \(1\)"):
        merge()
    bad.unlink()
    with pytest.raises(HardStop, match=r"missing image \(1\)"):
        merge()
    row = read_dataset(ws_copy / "train/base/training_set.csv").iloc[0]  # a carried-over row's image vanished
    (ws_copy / "images" / row["golden_path"] / f"{row['object_name']}.png").unlink()
    with pytest.raises(HardStop, match=rf"missing image \(2\): row 1 golden .*{row['object_name']}"):
        merge()


def test_later_merges_check_only_the_rows_they_add_while_the_rest_is_unchanged(ws_copy, tmp_path):
    from deftpipe.data import ImageLayout, write_dataset
    from deftpipe.deft import _merge
    from deftpipe.deft._context import HardStop

    pool = read_dataset(ws_copy / "mining/mining_pool.csv")
    val_csv, kpi_csv = ws_copy / "train/base/validation_set.csv", ws_copy / "kpi/testing_set.csv"

    def merge(label, previous, rows, validation=None):
        new_csv = write_dataset(rows, tmp_path / f"new_{label}.csv")
        return _merge.merge(previous_csv=previous, previous_is_base=label == "iter1", previous_provenance=None,
                            sdg_csv=None, mined_csv=new_csv, val_csv=val_csv, kpi_csv=kpi_csv,
                            layout=ImageLayout.create(ws_copy / "images"), out_dir=tmp_path / label,
                            iter_label=label, previous_validation=validation)

    first = merge("iter1", ws_copy / "train/base/training_set.csv", pool.head(3))
    assert first.checked_rows == "all"
    second = merge("iter2", first.combined_csv, pool.iloc[3:6], first.validation_json)
    assert second.checked_rows == "added" and second.n_rows == first.n_rows + 3
    assert len(read_dataset(tmp_path / "iter2/train_added_iter2.csv")) == 3
    # the added rows are still checked against the held-out sets: a validation row is a hard stop
    leaky = pd.concat([pool.iloc[6:8], read_dataset(val_csv).head(1)[pool.columns]], ignore_index=True)
    with pytest.raises(HardStop, match="overlaps held-out data"):
        merge("iter3", second.combined_csv, leaky, second.validation_json)
    # a previous set edited since its check, or a changed KPI file, is checked in full again
    combined = read_dataset(second.combined_csv)
    write_dataset(combined.iloc[:-1], second.combined_csv)
    assert merge("iter3", second.combined_csv, pool.iloc[6:8], second.validation_json).checked_rows == "all"
    third = merge("iter4", tmp_path / "iter3/train_combined_iter3.csv", pool.iloc[8:9],
                  tmp_path / "iter3/merge_validation.json")
    assert third.checked_rows == "added"
    third.validation_json.write_text("{not json")  # an unreadable voucher vouches for nothing
    assert merge("iter5", third.combined_csv, pool.iloc[9:10], third.validation_json).checked_rows == "all"
    fifth = tmp_path / "iter5"
    kpi_csv.write_text("\n".join(kpi_csv.read_text().splitlines()[:-1]) + "\n")  # one KPI row fewer
    assert merge("iter6", fifth / "train_combined_iter5.csv", pool.iloc[10:11],
                 fifth / "merge_validation.json").checked_rows == "all"


def test_the_loop_hands_the_previous_merge_voucher_to_the_next_merge(run_copy, loop_run, tmp_path):
    from deftpipe.data import write_dataset
    from deftpipe.deft._steps import step_merge

    run = loop_run(run_copy)
    combined = read_dataset(run.it("iter1")["combined_training_csv"])
    pool = read_dataset(run.ctx.pool_csv)
    fresh = pool[~identity_keys(pool).isin(set(identity_keys(combined)))].head(2)
    run.state["iterations"]["iter2"] = {"sdg_csv": str(write_dataset(fresh.head(0), tmp_path / "sdg.csv")),
                                       "mined_csv": str(write_dataset(fresh, tmp_path / "mined.csv"))}
    outcome = step_merge(run, "iter2")
    assert "validation and leakage ok on the 2 added rows" in outcome.summary
    report = json.loads(Path(outcome.artefacts["merge_validation"]).read_text())
    assert report["checked_rows"] == "added" and report["n_rows"] == len(combined) + 2


def test_added_rows_weight_reaches_the_retrain_spec(ws_copy):
    from deftpipe.config import dump_config, load_config

    cfg = load_config(ws_copy)
    cfg.deft.added_rows_weight = 4.0
    dump_config(cfg, ws_copy)
    results = ws_copy / "results" / "run"
    run_loop(ws_copy, results_dir=results, max_iterations=1, show_progress=False)
    state = json.loads((results / "deft_state.json").read_text())
    assert state["config"]["added_rows_weight"] == 4.0
    retrain = yaml.safe_load(next((results / "iter1").rglob("train_spec.yaml")).read_text())
    assert retrain["train"]["added_rows_weight"] == 4.0
    combined = next((results / "iter1").rglob("train_combined_iter1.csv")).read_text()
    assert "sdg" in combined or "mining_pool" in combined  # rows the weight applies to
