"""The report: renders fast, escapes text, and displays in a real headless browser."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from deftpipe.deft import render_report
from deftpipe.deft._html_report import svg_chart

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def require_service(reason: str) -> None:
    """As tests/conftest.py: skip locally, fail in CI (DEFTPIPE_REQUIRE_SERVICES=1)."""
    if os.environ.get("DEFTPIPE_REQUIRE_SERVICES"):
        pytest.fail(f"required service missing in CI: {reason}")
    pytest.skip(reason)


def test_report_renders_quickly_with_trajectory(finished_run):
    t0 = time.monotonic()
    render_report(finished_run, extra={"trajectory": [{"label": "phase1 <best>", "far_pct": 40.0, "kind": "automl"},
                                                      {"label": "baseline", "far_pct": 30.0, "kind": "deft"}]})
    assert time.monotonic() - t0 < 1.0
    page = (finished_run / "report.html").read_text()
    assert "Pipeline trajectory" in page and "phase1 &lt;best&gt;" in page and "<best>" not in page
    best = json.loads((finished_run / "best_model.json").read_text())
    assert f"FAR@100%R {best['far_pct']:.2f}% (" in page  # rounded, not the raw float
    assert json.loads((finished_run / "report_extra.json").read_text())["trajectory"][0]["far_pct"] == 40.0
    render_report(finished_run)  # a later rebuild keeps the bridge's trajectory
    assert "Pipeline trajectory" in (finished_run / "report.html").read_text()
    assert page.count("data:image/png;base64,") > 4  # thumbnails embedded
    assert "http" not in page.replace("http://www.w3.org/2000/svg", "")  # nothing fetched from the network


def test_rebuild_reuses_sections_until_an_artefact_is_rewritten(finished_run, tmp_path):
    """Sections are built once per process and rebuilt when their artefact changes on disk."""
    run = tmp_path / "run"
    shutil.copytree(finished_run, run)
    state = json.loads((run / "deft_state.json").read_text())
    alloc_path = run / "allocation_edited.json"  # inside the run: stored paths never lead out
    alloc = json.loads(Path(state["iterations"]["iter1"]["sdg_allocation"]).read_text())
    alloc_path.write_text(json.dumps(alloc))
    state["iterations"]["iter1"]["sdg_allocation"] = str(alloc_path)
    (run / "deft_state.json").write_text(json.dumps(state))
    render_report(run)
    assert "987654" not in (run / "report.html").read_text()
    alloc["targets"][0]["written"] = 987654
    alloc_path.write_text(json.dumps(alloc))
    os.utime(alloc_path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))
    render_report(run)
    assert "987654" in (run / "report.html").read_text()


def test_svg_chart_escapes_labels():
    svg = str(svg_chart([{"label": "<script>", "far_pct": 1.0}], target=5.0, title="t&t"))
    assert "<script>" not in svg and "&lt;script&gt;" in svg and "t&amp;t" in svg


def test_report_displays_in_headless_chromium(finished_run, tmp_path):
    if CHROMIUM is None:
        require_service("chromium is not installed (apt-get install chromium)")
    render_report(finished_run)
    url = (finished_run / "report.html").as_uri()
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*args, "--dump-dom", url], capture_output=True, text=True, timeout=120).stdout
    assert "<svg" in dom and "<polyline" in dom
    assert 'id="iterations"' in dom and ">iter1<" in dom and 'id="events"' in dom
    shot = tmp_path / "report.png"
    subprocess.run([*args, "--window-size=1200,1600", f"--screenshot={shot}", url], capture_output=True,
                   timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
