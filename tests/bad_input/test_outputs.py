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
