"""Do no harm: a challenger replaces the model in hand only when better beyond the noise of the KPI
set, and the user's spec trained once is delivered when nothing beats it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from deftpipe.deft import (
    USER_SPEC,
    Candidate,
    decide,
    keep,
    load_state,
    record_final_automl,
    record_user_spec,
    write_best_model,
)
from deftpipe.selection import CONFIDENCE, challenge, figures


def _scores(n_def=60, n_pass=600, seed=0, lift=0.0, bump_lowest=None):
    """A labelled score table: defects ~ N(0.7, .15) (+ ``lift``), PASS ~ N(0.3, .15)."""
    rng = np.random.default_rng(seed)
    y = np.r_[np.ones(n_def, bool), np.zeros(n_pass, bool)]
    s = np.where(y, rng.normal(0.7, 0.15, len(y)) + lift, rng.normal(0.3, 0.15, len(y)))
    if bump_lowest is not None:  # move only the lowest defect up to ``bump_lowest``
        i = np.flatnonzero(y)[np.argmin(s[y])]
        s[i] = bump_lowest
    return y, s


def test_challenge_point_values_are_the_rule_figure_and_noise_does_not_replace():
    y, a = _scores()
    c = challenge(y, a, a.copy())
    assert c.incumbent == c.challenger == figures(y, a)["tail_5"] and not c.replaces and c.confidence == 0.0
    # a clearly better model (every defect scored 0.1 higher) replaces; the reverse never does
    better = np.where(y, a + 0.1, a)
    assert challenge(y, a, better).replaces and challenge(y, a, better).confidence >= CONFIDENCE
    assert not challenge(y, better, a).replaces
    # a lower figure from one defect alone (the lowest moved up a little) is inside the noise
    y2, nudged = _scores(bump_lowest=float(np.sort(a[y])[1]))
    c = challenge(y, a, nudged)
    assert c.challenger < c.incumbent and not c.replaces, c


def _csv(path: Path, y: np.ndarray, s: np.ndarray) -> Path:
    pd.DataFrame({"input_path": [f"b/{i}" for i in range(len(y))], "golden_path": "g", "object_name": "o",
                  "label": np.where(y, "open", "PASS"), "score": s}).to_csv(path, index=False)
    return path


def _cand(tmp_path: Path, name: str, y, s) -> Candidate:
    csv = _csv(tmp_path / f"{name}.csv", y, s)
    (tmp_path / f"{name}.pth").write_bytes(name.encode())
    return Candidate(name, {**figures(y, s), "inference_csv": str(csv), "best_ckpt_path": str(tmp_path / f"{name}.pth")})


def test_chain_keeps_the_incumbent_unless_beaten_beyond_noise(tmp_path):
    y, a = _scores()
    first = _cand(tmp_path, "first", y, a)
    noisy = _cand(tmp_path, "noisy", y, _scores(bump_lowest=float(np.sort(a[y])[1]))[1])
    good = _cand(tmp_path, "good", y, np.where(y, a + 0.1, a))
    choice = keep([first, noisy, good])
    assert choice.kept.label == "good"
    assert [d["replaces"] for d in choice.decisions] == [False, True]
    assert choice.decisions[0]["how"] == "paired bootstrap on the KPI rows"
    # rows are joined on their identity, not their order
    shuffled = pd.read_csv(good.scores_csv).sample(frac=1.0, random_state=1)
    shuffled.to_csv(tmp_path / "shuffled.csv", index=False)
    moved = Candidate("moved", {**good.record, "inference_csv": str(tmp_path / "shuffled.csv"),
                                "best_ckpt_path": str(tmp_path / "first.pth") + "x"})
    assert decide(first, moved)["confidence"] == decide(first, good)["confidence"]
    # the same checkpoint never replaces itself; unreadable scores fall back to the recorded figure, said so
    assert decide(first, Candidate("again", dict(first.record)))["how"] == "the same checkpoint"
    blind = Candidate("blind", {**good.record, "inference_csv": str(tmp_path / "missing.csv")})
    assert decide(first, blind)["how"].startswith("recorded figures")


def _rewrite_scores(src: str, dest: Path, better: bool) -> Path:
    df = pd.read_csv(src, dtype=str, keep_default_na=False)
    s = pd.to_numeric(df["score"]).to_numpy()
    y = (df["label"] != "PASS").to_numpy()
    # better: every defect above every PASS row (FAR 0); worse: every defect at the lowest PASS score
    df["score"] = np.where(y, s.max() + 1.0, s) if better else np.where(y, s.min(), s)
    df.to_csv(dest, index=False)
    return dest


def test_final_automl_replaces_the_loop_only_beyond_noise(finished_run, tmp_path):
    results = Path(shutil.copytree(finished_run, tmp_path / "run"))
    state = load_state(results)
    chosen = json.loads((results / "best_model.json").read_text())
    ckpt = results / "final_automl" / "phase3.pth"  # a run reads only paths inside its folder
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chosen["checkpoint"], ckpt)
    same = state["iterations"][chosen["best_iteration"]]
    # Phase 3 scores the KPI set exactly as the loop's best did: a tie, the loop's best stays
    record_final_automl(results, checkpoint=ckpt, metrics=same, inference_csv=chosen["inference_csv"],
                        best_rec_path=chosen["inference_csv"])
    best = json.loads((results / "best_model.json").read_text())
    assert best["best_iteration"] == chosen["best_iteration"]
    assert best["choices"][-1]["challenger"] == "final_automl" and not best["choices"][-1]["replaces"]
    # scores that separate every defect from every PASS row: beyond the noise, Phase 3 is delivered
    csv = _rewrite_scores(chosen["inference_csv"], ckpt.parent / "p3.csv", better=True)
    record_final_automl(results, checkpoint=ckpt, metrics={**same, "far_pct": 0.0}, inference_csv=csv,
                        best_rec_path=csv)
    best = write_best_model(results)
    assert best["best_iteration"] == "final_automl", best["choices"]


def test_the_user_spec_is_delivered_when_nothing_beats_it(finished_run, tmp_path):
    results = Path(shutil.copytree(finished_run, tmp_path / "run"))
    chosen = json.loads((results / "best_model.json").read_text())
    user_ckpt = results / "reference" / "user.pth"
    user_ckpt.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(chosen["checkpoint"], user_ckpt)
    csv = _rewrite_scores(chosen["inference_csv"], user_ckpt.parent / "user.csv", better=True)
    metrics = {**load_state(results)["iterations"][chosen["best_iteration"]], "far_pct": 0.0}
    record_user_spec(results, checkpoint=user_ckpt, inference_csv=csv, metrics=metrics,
                     spec_path=load_state(results)["config"]["spec"], rec_id="rec_000")
    best = write_best_model(results)
    assert best["best_iteration"] == USER_SPEC and best["delivers_user_spec"] is True
    assert best["checkpoint"] == str(user_ckpt.resolve())
    assert "delivers the user's spec" in best["reason"]
    assert best["choices"][-1]["incumbent"] == USER_SPEC and not best["choices"][-1]["replaces"]
    # a user's spec the loop beats beyond the noise is not delivered
    worse = _rewrite_scores(chosen["inference_csv"], user_ckpt.parent / "user_worse.csv", better=False)
    record_user_spec(results, checkpoint=user_ckpt, inference_csv=worse, metrics={**metrics, "far_pct": 100.0},
                     spec_path=load_state(results)["config"]["spec"])
    best = write_best_model(results)
    assert best["best_iteration"] == chosen["best_iteration"] and not best["delivers_user_spec"], best["choices"]
