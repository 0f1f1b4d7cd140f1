"""Outputs are checked before any work: no command writes over one of its own inputs, into the
workspace's dataset files or images, or over a folder where it writes a file (issue 25)."""

from __future__ import annotations

import pytest


def _infer(b, out, csv=None):
    return ("model", "infer", "--checkpoint", b.root / "x.pth", "--csv", csv or b.ws / "kpi" / "testing_set.csv",
            "--out", out)


CASES = {
    "infer_out_is_its_csv": (lambda b: _infer(b, b.ws / "kpi" / "testing_set.csv"), r"also an input"),
    "infer_out_is_its_csv_by_another_name": (lambda b: _infer(b, b.ws / "kpi" / ".." / "kpi" / "testing_set.csv"),
                                             r"also an input"),
    "infer_out_is_another_dataset_csv": (lambda b: _infer(b, b.ws / "mining" / "mining_pool.csv"),
                                         r"dataset files of workspace"),
    "infer_out_is_the_holdout": (lambda b: _infer(b, b.ws / "holdout" / "holdout_set.csv"),
                                 r"dataset files of workspace"),
    "infer_out_is_pipeline_yaml": (lambda b: _infer(b, b.ws / "pipeline.yaml"), r"dataset files of workspace"),
    "infer_out_is_the_spec": (lambda b: _infer(b, b.ws / "specs" / "baseline_spec.yaml"),
                              r"dataset files of workspace"),
    "infer_out_is_a_folder": (lambda b: _infer(b, b.root), r"is a folder; give the path of a file"),
    "infer_out_into_images": (lambda b: _infer(b, b.ws / "images" / "scores.csv"), r"inside the images folder"),
    "infer_out_is_the_checkpoint": (lambda b: ("model", "infer", "--checkpoint", b.val, "--csv", b.train,
                                               "--out", b.val), r"also an input"),
    "embed_out_is_its_csv": (lambda b: ("model", "embed", "--checkpoint", b.root / "x.pth", "--csv", b.train,
                                        "--out", b.train), r"also an input"),
    "embed_out_is_a_folder": (lambda b: ("model", "embed", "--checkpoint", b.root / "x.pth", "--csv", b.train,
                                         "--out", b.ws), r"is a folder"),
    "train_out_is_the_workspace": (lambda b: ("model", "train", "--spec", b.spec, "--train", b.train, "--val", b.val,
                                              "--out", b.ws), r"dataset files of workspace"),
    "train_out_is_the_train_csv": (lambda b: ("model", "train", "--spec", b.spec, "--train", b.train, "--val",
                                              b.val, "--out", b.train), r"also an input"),
    "train_out_into_images": (lambda b: ("model", "train", "--spec", b.spec, "--train", b.train, "--val", b.val,
                                         "--out", b.ws / "images" / "m"), r"inside the images folder"),
    "sweep_out_is_the_workspace": (lambda b: ("automl", "run", "--spec", b.spec, "--train", b.train, "--val", b.val,
                                              "--out", b.ws, "--quiet"), r"dataset files of workspace"),
}


@pytest.mark.parametrize("case", CASES)
def test_output_over_an_input_or_dataset_is_refused_before_work(bad, case):
    argv, match = CASES[case]
    bad.refused(*argv(bad), match=match)


def test_infer_out_over_its_csv_keeps_the_dataset_with_a_real_checkpoint(bad, template_ckpt):
    kpi = bad.ws / "kpi" / "testing_set.csv"
    before = kpi.read_bytes()
    bad.refused("model", "infer", "--checkpoint", template_ckpt, "--csv", kpi, "--out", kpi, match=r"also an input")
    assert kpi.read_bytes() == before


@pytest.mark.parametrize("value", ["abc", "0", "-1", "1.5", "two", " -3 "])
def test_bad_num_threads_variable_is_one_error_naming_it(bad, monkeypatch, value):
    monkeypatch.setenv("DEFTPIPE_NUM_THREADS", value)
    bad.refused("data", "validate", bad.train, match=r"DEFTPIPE_NUM_THREADS=.* is not a whole number of threads")


@pytest.mark.parametrize("value", ["nan", "-nan", "NaN"])
def test_threshold_nan_is_named_as_not_a_number(bad, value):
    r = bad.refused("model", "infer", "--checkpoint", "x.pth", "--csv", bad.val, "--out", bad.root / "o.csv",
                    "--threshold", value, code=2, match=r"'--threshold'.*finite number from 0 to 1, got nan")
    assert "less than" not in r.err


def _holdout_without(bad, kind: str):
    import pandas as pd

    df = pd.read_csv(bad.ws / "holdout" / "holdout_set.csv", dtype=str, keep_default_na=False)
    df = df[df["label"] != "PASS"] if kind == "PASS" else df[df["label"] == "PASS"]
    path = bad.ws / "holdout" / f"no_{kind}.csv"
    df.to_csv(path, index=False)
    return path


@pytest.mark.parametrize("kind", ["PASS", "defect"])
def test_audit_of_a_holdout_without_pass_or_defect_rows_is_refused(bad, template_ckpt, kind):
    csv = _holdout_without(bad, kind)
    bad.refused("audit", "--checkpoint", template_ckpt, "--threshold", "0.5", "--csv", csv,
                match=rf"has no {kind} rows.*cannot be measured")
