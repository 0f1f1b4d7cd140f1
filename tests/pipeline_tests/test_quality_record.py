"""automl/phase1/quality_check.json is read and written through one typed record (QualityCheck)."""

import json

import pytest

from deftpipe.errors import StateError
from deftpipe.pipeline._quality_record import QualityCheck


def _written_by_earlier_code(run):
    """The dict run_phase1 wrote before the record existed (keys in its order, one unknown key)."""
    ckpt = run / "reference" / "train" / "model_epoch_001_step_4.pth"
    return {"winner": {"rec_id": "rec_0001", "score": 1.5, "checkpoint_uri": str(ckpt)}, "pred_counts": None,
            "collapsed_original": False, "untrained": {"far_pct": 90.0},
            "verdict": {"metric": "far_pct", "winner_score": 1.5, "untrained_score": 90.0, "beats_untrained": True},
            "rerun": None, "notes": ["a note"], "best_rec_path": str(run / "automl" / "phase1" / "best_rec.json"),
            "reference": {"rec_id": "rec_0000", "checkpoint": str(ckpt), "far_pct": 2.0},
            "handoff_choice": {"replaces": False, "why": "inside the noise"}, "stop_reason": None,
            "a_key_from_later": 7}


def test_an_earlier_file_loads_and_round_trips_byte_for_byte(tmp_path):
    run = tmp_path / "results" / "run_1"
    folder = run / "automl" / "phase1"
    folder.mkdir(parents=True)
    data = _written_by_earlier_code(run)
    (folder / "quality_check.json").write_text(json.dumps(data))
    qc = QualityCheck.load(folder)
    assert qc.metric == "far_pct" and qc.winner["rec_id"] == "rec_0001" and qc.reference["far_pct"] == 2.0
    assert qc.notes == ["a note"] and qc.handoff_choice["replaces"] is False
    qc.save(folder)
    assert json.loads((folder / "quality_check.json").read_text()) == data


def test_the_untrained_models_deleted_temporary_checkpoint_is_not_a_stored_path(tmp_path):
    """Earlier code stored it; it was never followed, and a resume must not refuse the file for it."""
    run = tmp_path / "results" / "run_1"
    folder = run / "automl" / "phase1"
    folder.mkdir(parents=True)
    data = _written_by_earlier_code(run)
    data["untrained"]["checkpoint"] = "/tmp/deftpipe_untrained_x/out/model_epoch_001_step_002.pth"
    (folder / "quality_check.json").write_text(json.dumps(data))
    assert "checkpoint" not in QualityCheck.load(folder).untrained


@pytest.mark.parametrize("change, match", [
    (None, "Phase 1 did not finish"),
    ("[1]", "not Phase 1's quality check"),
    ("{nope", "not valid JSON"),
    ({"winner": "rec_0001"}, "winner"),
    ({"reference": {"checkpoint": "/etc/passwd"}}, "outside"),
])
def test_a_bad_file_is_one_state_error(tmp_path, change, match):
    run = tmp_path / "results" / "run_1"
    folder = run / "automl" / "phase1"
    folder.mkdir(parents=True)
    if isinstance(change, dict):
        (folder / "quality_check.json").write_text(json.dumps({**_written_by_earlier_code(run), **change}))
    elif change is not None:
        (folder / "quality_check.json").write_text(change)
    with pytest.raises(StateError, match=match):
        QualityCheck.load(folder)
