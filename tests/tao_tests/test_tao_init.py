"""`deftpipe init --from-tao` adopts a TAO workspace in place; the pre-flight checks the TAO platform."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from deftpipe.cli import app
from deftpipe.config import load_config
from deftpipe.pipeline import preflight
from deftpipe.spec import load_spec

from ._tao_ws import SPLIT_CSVS


def _digest(folder: Path) -> str:
    h = hashlib.sha1()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p).encode() + p.read_bytes())
    return h.hexdigest()


def _init(src: Path, spec: Path, ws: Path, *extra: str):
    return CliRunner().invoke(app, ["init", "--from-tao", str(spec), str(ws), "--kpi-csv", str(src / SPLIT_CSVS["kpi"]),
                                    "--pool-csv", str(src / SPLIT_CSVS["pool"]), *extra])


@pytest.fixture
def tao_ws(tao_src, tmp_path) -> Path:
    res = _init(*tao_src, tmp_path / "ws")
    assert res.exit_code == 0, res.output
    return tmp_path / "ws"


def test_init_from_tao_adopts_the_tao_workspace_in_place(tao_src, tmp_path):
    src, spec = tao_src
    before = _digest(src.parent)
    res = _init(src, spec, tmp_path / "ws", "--platform", "docker")
    assert res.exit_code == 0, res.output
    assert _digest(src.parent) == before  # nothing of the TAO workspace copied, moved or changed
    ws = tmp_path / "ws"
    cfg = load_config(ws)
    assert cfg.adapter.kind == "tao" and cfg.adapter.tao.platform == "docker"
    assert yaml.safe_load((ws / "pipeline.yaml").read_text())["adapter"]["kind"] == "tao"
    assert Path(cfg.data.kpi_csv) == src / SPLIT_CSVS["kpi"] and Path(cfg.data.train_csv) == src / SPLIT_CSVS["train"]
    assert not list(ws.rglob("*.png")) and not list(ws.rglob("*.csv"))  # no copies
    s = load_spec(ws / cfg.data.spec)
    assert s.adapter.kind == cfg.adapter.kind and s.adapter.tao == cfg.adapter.tao
    assert s.tao.source == str(spec) and s.dataset.classify.test_csv is None  # KPI only via pipeline.yaml
    assert cfg.automl.phase1.search_space == "specs/tao_search_space.yaml"


def test_init_from_tao_bad_input_is_one_clear_message(tao_src, tmp_path):
    src, spec = tao_src
    doc = yaml.safe_load(spec.read_text())
    doc["dataset"]["classify"]["image_ext"] = ".jpg"  # the images are .png
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    res = _init(src, bad, tmp_path / "ws")
    assert res.exit_code == 1
    assert "image file(s) missing" in str(res.exception) and "fix images_dir, image_ext" in str(res.exception)
    assert not (tmp_path / "ws").exists()  # nothing half-written
    res = _init(src, spec, tmp_path / "ws2", "--platform", "lsf")
    assert res.exit_code == 1 and "--platform must be one of virtualenv, docker, slurm, kubernetes" in str(res.exception)
    res = CliRunner().invoke(app, ["init", "--from-tao", str(spec), str(tmp_path / "ws3")])
    assert res.exit_code == 2 and "--kpi-csv" in res.output


def _items(report, section):
    sec = next(s for s in report["sections"] if s["name"] == section)
    return {i["name"]: i for i in sec["items"]}


def test_tao_preflight_shows_platform_credentials_and_mining_choice(tao_ws):
    report = preflight(tao_ws, measure=False)
    assert report["ok"], report["blockers"]
    host, creds, arts = (_items(report, n) for n in ("host", "credentials", "artefacts"))
    assert "virtualenv" in host["TAO platform"]["value"] and host["TAO platform"]["status"] == "ok"
    assert "stand-in" in host["TAO trainer script"]["value"]
    assert "batch size (rule of thumb)" in host
    assert "none required" in creds["TAO credentials"]["value"]
    assert arts["TAO spec (adopted, unchanged)"]["status"] == "PRESENT"
    assert "pair_difference" in arts["mining embedding"]["value"]


def test_tao_preflight_on_docker_never_shows_credential_values(tao_ws, monkeypatch):
    monkeypatch.setenv("NGC_KEY", "nvapi-secret-value-123")
    monkeypatch.setenv("PATH", "/nonexistent")  # no docker binary here
    for f in ("pipeline.yaml", "specs/baseline_spec.yaml"):
        p = tao_ws / f
        p.write_text(p.read_text().replace("platform: virtualenv", "platform: docker"))
    report = preflight(tao_ws, measure=False)
    text = json.dumps(report)
    assert "nvapi-secret-value-123" not in text
    creds = _items(report, "credentials")
    assert creds["$NGC_KEY (TAO docker, required)"]["status"] == "SET"
    assert any("docker daemon not reachable" in b for b in report["blockers"])
    assert _items(report, "artefacts")["TAO container image"]["value"].startswith("nvcr.io/nvidia/tao/")


def test_tao_preflight_blocks_when_pipeline_and_spec_disagree(tao_ws):
    p = tao_ws / "pipeline.yaml"
    p.write_text(p.read_text().replace("platform: virtualenv", "platform: slurm"))
    report = preflight(tao_ws, measure=False)
    assert any("adapter section and the spec's adapter section differ" in b for b in report["blockers"])


@pytest.mark.slow
def test_tao_preflight_estimate_is_one_job_of_each_kind(tao_ws):
    """No per-job times given: the dry run launches one training job (+ its validation scoring) and one
    scoring job — never a best-of-two, whose repeat would re-attach to the first scoring (~0 s)."""
    from deftpipe.tao import make_sdk

    report = preflight(tao_ws, measure=True)
    assert report["ok"], report["blockers"]
    est = next(s for s in report["sections"] if s["name"] == "estimate")
    assert est["rates"]["source"] == "one real job of each kind" and est["rates"]["s_infer_job"] > 0.5
    jobs = make_sdk(load_spec(tao_ws / "specs" / "baseline_spec.yaml").adapter.tao).list_jobs()
    assert sorted(j["action"] for j in jobs) == ["inference", "inference", "train"]
