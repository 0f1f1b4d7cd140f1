"""Paths read from deftpipe's own files: one resolver (``deftpipe._stored_paths``) used by every reader.

* A property: a path planted in any path field, at any depth, of a run's ``deft_state.json``,
  ``pipeline_state.json`` or ``best_model.json`` that leads outside the run folder, its workspace and
  its dataset paths is refused by every reader of that file.
* The list of readers: every place in the source that parses JSON from a file is either routed through
  the resolver or listed here with the reason it follows no path. A new reader fails this test until
  it is one or the other.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deftpipe
from deftpipe._stored_paths import PATH_FIELDS, check_stored_paths
from deftpipe.errors import StateError

SRC = Path(deftpipe.__file__).parent
SOME = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _run(tmp: Path) -> tuple[Path, Path]:
    ws = tmp / "ws"
    run = ws / "results" / "run_20260101_000000"
    run.mkdir(parents=True, exist_ok=True)
    (ws / "pipeline.yaml").write_text("name: x\n")
    return ws, run


def _docs(ws: Path, run: Path) -> dict[str, dict]:
    from deftpipe.deft._state import STATE_VERSION
    from deftpipe.pipeline._pipeline_state import PHASES

    return {
        "deft_state.json": {"version": STATE_VERSION, "status": "in_progress", "results_dir": str(run),
                            "workspace": str(ws), "events": [], "config": {"kpi_csv": str(ws / "kpi" / "k.csv")},
                            "iterations": {"baseline": {"status": "complete",
                                                        "best_ckpt_path": str(run / "baseline" / "m.pth")}}},
        "pipeline_state.json": {"status": "running", "events": [], "workspace": str(ws),
                                "phases": {p: {"status": "pending"} for p in PHASES}},
        "best_model.json": {"checkpoint": str(run / "baseline" / "m.pth"), "threshold": 0.5, "details": {}},
    }


def _readers(run: Path):
    from deftpipe.deft import BestModel, DeftState, load_state
    from deftpipe.pipeline import PipelineRecord, PipelineState

    # the typed records are the files' only readers (the audit reads all three through them)
    return {"deft_state.json": [lambda: load_state(run), lambda: DeftState.load(run)],
            "pipeline_state.json": [lambda: PipelineRecord.load(run), lambda: PipelineState.load(run)],
            "best_model.json": [lambda: BestModel.load(run), lambda: BestModel.read(run)]}


def test_the_files_as_written_are_read(tmp_path):
    ws, run = _run(tmp_path)
    for name, doc in _docs(ws, run).items():
        (run / name).write_text(json.dumps(doc))
        for read in _readers(run)[name]:
            read()


outside = st.sampled_from(["/etc/passwd", "/root/.ssh/id_rsa", "../../../outside.csv", "../../../other_ws/kpi.csv",
                           "/tmp/elsewhere/model.pth", "baseline/../../../../x.pth"])


@SOME
@given(file=st.sampled_from(["deft_state.json", "pipeline_state.json", "best_model.json"]),
       field=st.sampled_from(sorted(PATH_FIELDS - {"workspace"})), value=outside,
       where=st.sampled_from(["top", "phase", "iteration", "list"]))
def test_a_path_outside_is_refused_by_every_reader(tmp_path, file, field, value, where):
    ws, run = _run(tmp_path)
    docs = _docs(ws, run)
    doc = docs[file]
    target = {"top": doc, "phase": doc.get("phases", {}).get("phase1", doc),
              "iteration": doc.get("iterations", {}).get("baseline", doc)}.get(where)
    if where == "list":
        doc.setdefault("extra", []).append({field: value})
    else:
        target[field] = value
    (run / file).write_text(json.dumps(doc))
    for read in _readers(run)[file]:
        with pytest.raises(StateError, match=rf"{field} names .*outside the run folder"):
            read()


def test_a_symlink_out_of_the_run_is_refused(tmp_path):
    ws, run = _run(tmp_path)
    (tmp_path / "secret").mkdir()
    (run / "link").symlink_to(tmp_path / "secret")
    with pytest.raises(StateError, match="outside"):
        check_stored_paths({"checkpoint": str(run / "link" / "m.pth")}, run / "best_model.json")


def test_a_dataset_path_pipeline_yaml_names_outside_the_workspace_is_allowed(tmp_path):
    ws, run = _run(tmp_path)
    (ws / "pipeline.yaml").write_text(f"data:\n  kpi_csv: {tmp_path / 'shared' / 'kpi.csv'}\n")
    check_stored_paths({"config": {"kpi_csv": str(tmp_path / "shared" / "kpi.csv")}}, run / "deft_state.json")
    with pytest.raises(StateError):
        check_stored_paths({"config": {"pool_csv": str(tmp_path / "shared" / "pool.csv")}}, run / "deft_state.json")


#: Every JSON-from-a-file reader in the source, by "module:function", with how it keeps the rule.
READERS = {
    "_stored_paths:read_run_json": "the resolver itself",
    "_record_io:read_json_file": "the records' file opener; each caller below checks what it returns",
    "deft/_records:load": "check_stored_paths",  # DeftState.load, BestModel.load
    "_pipeline_record:load": "check_stored_paths",  # PipelineState.load
    "automl/_best_rec:load": "check_stored_paths",  # BestRec.load
    "pipeline/_quality_record:load": "check_stored_paths",  # QualityCheck.load
    "model/_train:_record_failure": "metrics.json of the folder being written; follows no path",
    "model/_command:train": "the external trainer's metrics; numbers only",
    "model/_command:evaluate": "the external evaluator's stdout; numbers only",
    "automl/_out_dir:_owner": "the sweep marker: study name and storage only",
    "automl/_sweep:_enqueue_values": "best.specs of a best_rec the user passed on the command line (values only)",
    "deft/_runs:describe": "display only (status); follows no path",
    "deft/_runs:_sweeps": "a sweep's progress.json: counts and names for status; follows no path",
    "deft/_html_report:_read_json": "artefact paths from a state load_state checked",
    "deft/_evaluator:run_evaluator": "the evaluator's stdout",
    "deft/_steps:_targets": "routing_json, an artefact path load_state checked",
    "deft/_steps:step_mining": "routing_json, an artefact path load_state checked",
    "deft/_merge:_checked_before": "merge_validation, an artefact path load_state checked",
    "pipeline/_trajectory:*": "best_model.json of the run folder: figures only",
    "pipeline/_estimate:*": "the calibration file: numbers only",
    "audit/_core:audit_scored": "json round-trip of a dict (no file)",
    "automl/_worker_process:main": "its orders on stdin from the sweep that started it (no file)",
    "deft/_model_stages:kpi_metrics": "json round-trip of a dict (no file)",
}


def _json_readers() -> set[str]:
    found = set()
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("").as_posix()
        if rel.startswith("tao/"):
            continue  # the TAO package reads TAO's own files (docs/tao.md)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, ast.FunctionDef):
                continue
            for node in ast.walk(fn):
                if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                        and node.func.attr in ("loads", "load") and isinstance(node.func.value, ast.Name)
                        and node.func.value.id == "json"):
                    found.add(f"{rel}:{fn.name}")
                # the records' one file opener (deftpipe._record_io): its callers read JSON too
                if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "read_json_file":
                    found.add(f"{rel}:{fn.name}")
    return found


def test_every_reader_of_a_stored_file_is_listed():
    listed = set(READERS)
    unlisted = sorted(r for r in _json_readers()
                      if r not in listed and f"{r.split(':')[0]}:*" not in listed)
    found = _json_readers()
    stale = sorted(r for r in listed if not r.endswith(":*") and r not in found)
    assert not stale, f"READERS lists readers that no longer exist: {stale}"
    assert not unlisted, (f"new JSON readers {unlisted}: read through deftpipe._stored_paths.read_run_json "
                          "(or check_stored_paths), or list them in READERS with why they follow no path")


@pytest.mark.parametrize("reader", [r for r, how in READERS.items() if how == "check_stored_paths"])
def test_listed_checked_readers_call_the_resolver(reader):
    rel, name = reader.split(":")
    tree = ast.parse((SRC / f"{rel}.py").read_text(encoding="utf-8"))
    fn = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == name)
    assert "check_stored_paths" in ast.unparse(fn)
