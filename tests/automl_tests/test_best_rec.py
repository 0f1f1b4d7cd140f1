"""best_rec.json as a typed record (issue 27 item 1): BestRec / BestTrial / TrialRecord with RecStatus.

``data/best_rec_v1.json`` was written by the sweep before the records were typed (3 trials, the
winner's fresh-seed re-run did not reproduce); it must load, and write back byte for byte.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from rich.console import Console

from deftpipe.automl import BEST_REC_NAME, BestRec, BestTrial, RecStatus, TrialRecord, write_best_rec
from deftpipe.automl._console import summary_table
from deftpipe.errors import StateError, SweepError

OLD = Path(__file__).parent / "data" / "best_rec_v1.json"


@pytest.fixture
def old_dir(tmp_path) -> Path:
    shutil.copy(OLD, tmp_path / BEST_REC_NAME)
    return tmp_path


def test_a_file_written_before_the_records_were_typed_loads_typed(old_dir):
    rec = BestRec.load(old_dir)
    assert isinstance(rec.best, BestTrial) and all(isinstance(r, TrialRecord) for r in rec.all_recs)
    assert rec.schema_version == 1 and rec.metric_name == "far_pct" and rec.direction == "minimize"
    assert [r.status for r in rec.all_recs] == [RecStatus.COMPLETE] * 3
    assert rec.best.rec_id == "trial_000" and rec.best.checkpoint_epoch == 1
    rerun = rec.rec("trial_001")
    assert rerun.rerun_score == 98.4375 and rerun.rerun_seed == 1042
    assert rerun.reason == "not selected: did not reproduce with a fresh seed"
    assert rec.rec("trial_009") is None
    console = Console(file=io.StringIO(), width=200)
    console.print(summary_table(rec))
    assert "trial_000" in console.file.getvalue() and "(rerun 98.44)" in console.file.getvalue()


def test_it_writes_back_byte_for_byte(old_dir, tmp_path):
    out = tmp_path / "again"
    BestRec.load(old_dir).save(out)
    assert (out / BEST_REC_NAME).read_bytes() == OLD.read_bytes()
    # a row's None fields stay written, and keys it does not name are kept
    raw = json.loads(OLD.read_text())
    raw["all_recs"][0]["added_later"] = {"x": 1}
    write_best_rec(raw, out)
    assert json.loads((out / BEST_REC_NAME).read_text()) == raw


def test_an_upper_case_status_reads_as_the_enum(old_dir):
    raw = json.loads(OLD.read_text())
    raw["all_recs"][2]["status"] = "COMPLETE"
    (old_dir / BEST_REC_NAME).write_text(json.dumps(raw))
    assert BestRec.load(old_dir).all_recs[2].status is RecStatus.COMPLETE


def test_bad_files_and_bad_records_are_refused(old_dir, tmp_path):
    with pytest.raises(StateError, match=r"best_rec.json not found: the sweep in .* has not finished"):
        BestRec.load(tmp_path / "none")
    raw = json.loads(OLD.read_text())
    raw["best"]["checkpoint_epoch"] = "one"
    (old_dir / BEST_REC_NAME).write_text(json.dumps(raw))
    with pytest.raises(StateError, match=r"has fields of the wrong type \(best.checkpoint_epoch"):
        BestRec.load(old_dir)
    (old_dir / BEST_REC_NAME).write_text("{not json")
    with pytest.raises(StateError, match=r"is not valid JSON"):
        BestRec.load(old_dir)
    bad = BestRec.model_validate(json.loads(OLD.read_text()))
    bad.all_recs[0].status = "exploded"
    with pytest.raises(SweepError, match=r"best_rec.json does not match its schema at 'all_recs/0/status'"):
        bad.save(tmp_path / "y")
    assert not (tmp_path / "y" / BEST_REC_NAME).exists()
