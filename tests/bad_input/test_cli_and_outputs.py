"""Out-of-range command-line numbers (one line, exit 2), output folders holding another run (refused,
nothing lost), storage that cannot be used (no empty folder or database left), and `deftpipe status`
(live vs dead run, square brackets kept)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from deftpipe._fs import run_lock


def _train(b, *extra):
    return ("model", "train", "--spec", b.spec, "--train", b.train, "--val", b.val, "--out", b.root / "out", *extra)


def _sweep(b, *extra):
    return ("automl", "run", "--spec", b.spec, "--train", b.train, "--val", b.val, "--out", b.root / "sweep",
            "--max-recommendations", 1, "--epochs", 1, "--quiet", *extra)


FLAGS = {
    "epochs_zero": (lambda b: _train(b, "--epochs", 0), r"'--epochs'.*greater than or equal to 1"),
    "epochs_negative": (lambda b: _train(b, "--epochs", -4), r"'--epochs'"),
    "epochs_text": (lambda b: _train(b, "--epochs", "ten"), r"'--epochs'.*integer"),
    "epochs_float": (lambda b: _train(b, "--epochs", "2.5"), r"'--epochs'.*integer"),
    "threshold_nan": (lambda b: ("model", "evaluate", "--checkpoint", "x.pth", "--csv", b.val, "--threshold", "nan"),
                      r"'--threshold'"),
    "threshold_above_one": (lambda b: ("model", "evaluate", "--checkpoint", "x.pth", "--csv", b.val,
                                       "--threshold", "1.5"), r"'--threshold'"),
    "init_negative_seed": (lambda b: ("init", "--synthetic", b.root / "new_ws", "--seed", -1), r"'--seed'"),
    "init_bad_size": (lambda b: ("init", "--synthetic", b.root / "new_ws", "--size", "huge"), r"--size must be"),
    "init_crop_too_big": (lambda b: ("init", "--from-deeppcb", b.root, b.root / "new_ws", "--crop-size", 100000),
                          r"'--crop-size'"),
    "init_pass_ratio_inf": (lambda b: ("init", "--from-deeppcb", b.root, b.root / "new_ws", "--pass-ratio", "inf"),
                            r"'--pass-ratio'.*finite"),
    "sweep_zero_trials": (lambda b: _sweep(b, "--max-recommendations", 0), r"'--max-recommendations'"),
    "sweep_negative_seed": (lambda b: _sweep(b, "--seed", -7), r"'--seed'"),
    "sweep_margin_nan": (lambda b: _sweep(b, "--rerun-margin", "nan"), r"'--rerun-margin'"),
    "sweep_heartbeat_negative": (lambda b: _sweep(b, "--heartbeat", -1), r"'--heartbeat'"),
    "unknown_flag": (lambda b: ("status", b.ws, "--colour"), r"No such option"),
    "deft_iterations_negative": (lambda b: ("deft", "run", b.ws, "--max-iterations", -1), r"'--max-iterations'"),
}


@pytest.mark.parametrize("case", FLAGS)
def test_bad_flag_is_one_line_exit_2(bad, case):
    argv, match = FLAGS[case]
    bad.refused(*argv(bad), code=2, match=match)


def test_train_into_a_folder_holding_a_run_is_refused(bad):
    out = bad.root / "out"
    out.mkdir()
    (out / "model_epoch_003_step_021.pth").write_bytes(b"earlier weights")
    (out / "metrics.json").write_text("{}")
    bad.refused(*_train(bad), match=r"--out .* holds an earlier training")


def test_sweep_into_a_folder_of_another_study_is_refused(bad):
    sweep = bad.root / "sweep"
    sweep.mkdir()
    (sweep / ".study.json").write_text(json.dumps({"study": "first", "storage": "sqlite:///elsewhere.db"}))
    (sweep / "best_rec.json").write_text("{}")
    bad.refused(*_sweep(bad, "--study", "second"), match=r"holds study 'first'.*--study first")


def test_sweep_into_an_unlabelled_folder_with_results_is_refused(bad):
    sweep = bad.root / "sweep"
    (sweep / "trials" / "rec_0").mkdir(parents=True)
    r = bad.cli(*_sweep(bad, "--storage", bad.root / "other.db", "--study", "s2"))
    assert r.code == 1 and "holds an earlier sweep" in r.err, r.err
    assert (sweep / "trials" / "rec_0").is_dir() and not (sweep / "best_rec.json").exists()


STORAGE = {
    "unreachable_postgres": ("postgresql://alice:hunter2@127.0.0.1:9/optuna", r"cannot open study storage"),
    "sqlite_folder_missing": ("sqlite:///{root}/no/such/dir/study.db", r"folder .*no/such/dir of SQLite storage"),
    "not_a_database": ("{root}/ws/pipeline.yaml", r"cannot open study storage|file is not a database"),
    "journal_file": ("{root}/study.log", r"journal file"),
}


@pytest.mark.parametrize("case", STORAGE)
def test_unusable_storage_leaves_no_folder_or_database(bad, case):
    url, match = STORAGE[case]
    r = bad.refused(*_sweep(bad, "--storage", url.format(root=bad.root)), match=match)
    assert "hunter2" not in r.err  # the password never reaches a message
    assert not (bad.root / "sweep").exists()


def test_worker_for_a_missing_study_creates_no_database(bad):
    bad.refused("automl", "worker", "--storage", bad.root / "none.db", "--study", "nope", match=r"no study 'nope'")
    assert not (bad.root / "none.db").exists()


def _run_folder(bad, status: str, summary: str):
    run = bad.ws / "results" / "run_20260101_000000"
    run.mkdir(parents=True)
    (run / "pipeline_state.json").write_text(json.dumps(
        {"status": status, "phases": {"phase1": {"status": status, "summary": summary}}}))
    return run


def test_status_keeps_square_brackets_and_tells_a_dead_run(bad):
    _run_folder(bad, "running", "best [rec_0003] at lr [0.001]")
    r = bad.cli("status", bad.ws)
    assert r.code == 0, r.err
    text = " ".join(r.out.split())
    assert "[rec_0003]" in text and "[0.001]" in text
    assert "process: none" in text and "to resume" in text


def test_status_tells_a_live_run(bad):
    run = _run_folder(bad, "running", "x")
    with run_lock(run, name=".pipeline.lock"):
        # the lock is held by this process: status in another process sees a live run
        out = subprocess.run([sys.executable, "-c", "from deftpipe.cli import main; main()", "status", str(bad.ws)],
                             capture_output=True, text=True, timeout=120, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert "process: live" in out.stdout


@pytest.mark.parametrize("argv,match", [
    (("audit", "--checkpoint", "x.pth", "--threshold", "nan", "--csv", "h.csv"), r"'--threshold'"),
    (("audit", "--checkpoint", "x.pth", "--threshold", "0.5", "--csv", "h.csv", "--seed", "-2"), r"'--seed'"),
])
def test_bad_audit_flag_is_one_line_exit_2(bad, argv, match):
    bad.refused(*argv, code=2, match=match)


def test_status_of_a_folder_that_does_not_exist_says_so(bad):
    r = bad.refused("status", bad.root / "no_such_ws", match=r"no_such_ws does not exist")
    assert "start one" not in r.err


def test_status_of_a_file_says_it_is_not_a_folder(bad):
    bad.refused("status", bad.train, match=r"does not exist \(it is a file\)")


def test_audit_of_a_workspace_without_a_finished_run_says_which_folder_to_give(bad):
    bad.refused("audit", bad.ws, match=r"is a workspace with no finished run.*give a run folder")


def test_audit_of_a_workspace_audits_its_latest_finished_run(bad):
    for stamp in ("20260101_000000", "20260102_000000"):
        run = bad.ws / "results" / f"run_{stamp}"
        run.mkdir(parents=True)
        (run / "best_model.json").write_text("{}")
    (bad.ws / "results" / "run_20260103_000000").mkdir()  # unfinished: no deliverable
    r = bad.refused("audit", bad.ws, match=r"latest finished run: .*run_20260102_000000", one_line=False)
    assert r.code == 1 and "run_20260102_000000/deft_state.json not found" in r.err


def test_audit_of_a_missing_folder_says_so(bad):
    bad.refused("audit", bad.root / "gone", match=r"gone does not exist; give a run folder")


def _images_dir(bad, value: str):
    cfg = bad.ws / "pipeline.yaml"
    cfg.write_text(cfg.read_text().replace("images_dir: images", f"images_dir: {value}", 1))


def test_a_wrong_data_images_dir_is_a_preflight_blocker(bad):
    _images_dir(bad, "imgs_typo")
    r = bad.refused("preflight", bad.ws, "--no-dry-run", "--json", match=r"images folder .*imgs_typo is missing",
                    one_line=False)
    assert any("imgs_typo" in b for b in json.loads(r.out)["blockers"])


def test_data_validate_and_model_commands_read_the_same_images_dir(bad, template_ckpt):
    _images_dir(bad, "imgs_typo")
    bad.refused("data", "validate", bad.train, match=r"imgs_typo does not exist")
    bad.refused("model", "evaluate", "--checkpoint", template_ckpt, "--csv", bad.val, match=r"imgs_typo.* does not exist")


def test_a_moved_images_folder_named_in_pipeline_yaml_is_used_by_every_command(bad, template_ckpt):
    (bad.ws / "images").rename(bad.ws / "pictures")
    _images_dir(bad, "pictures")  # the spec still says ../images
    assert bad.cli("data", "validate", bad.train).code == 0
    r = bad.cli("model", "evaluate", "--checkpoint", template_ckpt, "--csv", bad.val, "--json")
    assert r.code == 0, r.err
    r = bad.cli("preflight", bad.ws, "--no-dry-run", "--json")
    assert not [b for b in json.loads(r.out)["blockers"] if "images" in b], r.out
