"""``RESULTS_DIR/report.html``: one self-contained page rebuilt after every commit.

No JavaScript and no network: the KPI charts are inline SVG built here, thumbnails are small PNGs
embedded as base64 data URIs, and every value goes through Jinja2's autoescaping (the SVG is
built from escaped text before it is marked safe).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from PIL import Image

from deftpipe._fs import atomic_write_json, atomic_write_text
from deftpipe.data import layout_for, open_image
from deftpipe.deft._records import FINAL_AUTOML, BestModel, DeftState, report_order
from deftpipe.errors import DataError
from deftpipe.metrics import fmt_value
from deftpipe.spec import load_spec

THUMB_PX = 56
MAX_RCA_REPORTS = 3
EXTRA_NAME = "report_extra.json"
_env = Environment(loader=PackageLoader("deftpipe.deft", "templates"), autoescape=select_autoescape(["html", "j2"]))
_env.filters["pct"] = fmt_value


def svg_chart(points: list[dict[str, Any]], *, target: float | None, title: str) -> Markup:
    """A line chart of ``far_pct`` per point ({label, far_pct, kind}) with the KPI target dashed."""
    pts = [p for p in points if p.get("far_pct") is not None]
    w, h, left, right, top, bottom = 720, 240, 48, 16, 28, 44
    if not pts:
        return Markup(f'<svg class="chart" width="{w}" height="60" role="img"><text x="10" y="30">'
                      f'{html.escape(title)}: no KPI figure yet</text></svg>')
    ymax = max([float(p["far_pct"]) for p in pts] + [target or 0.0]) * 1.15 or 1.0
    pad = 56  # room for the first and last x labels (e.g. "Phase 1 best (val)")
    step = (w - left - right - 2 * pad) / max(len(pts) - 1, 1)

    def xy(i: int, v: float) -> tuple[float, float]:
        return left + pad + i * step, top + (h - top - bottom) * (1 - v / ymax)

    out = [f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" '
           f'aria-label="{html.escape(title)}"><title>{html.escape(title)}</title>',
           f'<text x="{left}" y="16" class="ctitle">{html.escape(title)}</text>',
           f'<line x1="{left}" y1="{h - bottom}" x2="{w - right}" y2="{h - bottom}" stroke="#999"/>',
           f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h - bottom}" stroke="#999"/>']
    for frac in (0.0, 0.5, 1.0):
        y = top + (h - top - bottom) * (1 - frac)
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end" class="tick">{ymax * frac:.1f}%</text>')
    if target is not None:
        _, ty = xy(0, target)
        out.append(f'<line x1="{left}" y1="{ty:.1f}" x2="{w - right}" y2="{ty:.1f}" stroke="#2a7" '
                   f'stroke-dasharray="6 4"/><text x="{w - right}" y="{ty - 4:.1f}" text-anchor="end" '
                   f'class="tick">target {target:g}%</text>')
    coords = [xy(i, float(p["far_pct"])) for i, p in enumerate(pts)]
    out.append('<polyline fill="none" stroke="#36c" stroke-width="2" points="'
               + " ".join(f"{x:.1f},{y:.1f}" for x, y in coords) + '"/>')
    for (x, y), p in zip(coords, pts, strict=True):
        colour = {"automl": "#c63", "final": "#c63"}.get(str(p.get("kind")), "#36c")
        out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4" fill="{colour}"/>'
                   f'<text x="{x:.1f}" y="{y - 8:.1f}" text-anchor="middle" class="val">{float(p["far_pct"]):.1f}%</text>'
                   f'<text x="{x:.1f}" y="{h - bottom + 16}" text-anchor="middle" class="tick">'
                   f'{html.escape(str(p["label"]))}</text>')
    out.append("</svg>")
    return Markup("".join(out))


_THUMB_MEMO: dict[tuple, str] = {}  # (golden, test) file + mtime -> thumbnail data URI
_LAYOUT_MEMO: dict[tuple, Any] = {}  # spec (path, mtime) -> its image layout


def _spec_layout(spec: str | None) -> Any:
    """The image layout of the run's spec, parsed once per version of the file; None when the
    spec is missing or unreadable (a report without thumbnails is still a report)."""
    key = _stamp(spec)
    if key is None:
        return None
    if key not in _LAYOUT_MEMO:
        try:
            _LAYOUT_MEMO[key] = layout_for(load_spec(spec), Path(spec).resolve().parent)
        except Exception:  # noqa: BLE001
            _LAYOUT_MEMO[key] = None
    return _LAYOUT_MEMO[key]


class _Thumbs:
    """Base64 PNG thumbnails of a row's golden | test pair (first light), None when unreadable."""

    def __init__(self, state: dict[str, Any]):
        self.layout = _spec_layout(state.get("config", {}).get("spec"))

    def pair(self, row: dict[str, Any]) -> str | None:
        if self.layout is None:
            return None
        try:
            tests, goldens = self.layout.row_files(row)
            key = tuple((str(p), p.stat().st_mtime_ns) for p in (goldens[0], tests[0]))
        except (OSError, KeyError, TypeError, DataError):  # DataError: a path outside the root is never shown
            return None
        if key not in _THUMB_MEMO:  # the report is rebuilt after every stage: encode each pair once
            try:
                ims = []
                for p in (goldens[0], tests[0]):
                    with open_image(p) as im:
                        ims.append(im.convert("L"))
            except (OSError, DataError):
                return None
            canvas = Image.new("L", (THUMB_PX * 2 + 2, THUMB_PX), 255)
            for i, im in enumerate(ims):
                canvas.paste(im.resize((THUMB_PX, THUMB_PX)), (i * (THUMB_PX + 2), 0))
            buf = io.BytesIO()
            canvas.save(buf, format="PNG")
            if len(_THUMB_MEMO) > 4096:
                _THUMB_MEMO.clear()
            _THUMB_MEMO[key] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
        return _THUMB_MEMO[key]


def _read_json(path: str | None) -> dict[str, Any] | None:
    try:
        return json.loads(Path(path).read_text()) if path else None
    except (OSError, ValueError):
        return None


def _rca_sections(its: dict[str, Any], thumbs: _Thumbs) -> list[dict[str, Any]]:
    labels = [lb for lb in sorted(its, key=report_order) if its[lb].get("rca_summary")][-MAX_RCA_REPORTS:]
    out = []
    for lb in reversed(labels):
        summary = _read_json(its[lb]["rca_summary"])
        if not summary:
            continue
        for g in summary["groups"]:
            g["thumbs"] = [(r.get("object_name"), r.get("score"), thumbs.pair(r)) for r in g["representatives"]]
        out.append({"label": lb, "summary": summary})
    return out


def _stamp(path: str | None) -> tuple[str, int] | None:
    """(path, mtime) of an artefact, so a memo entry is dropped when the file is rewritten."""
    try:
        return (path, os.stat(path).st_mtime_ns) if path else None
    except OSError:
        return None


_CONTRIB_MEMO: dict[tuple, dict[str, Any] | None] = {}  # an iteration's artefacts -> its section


def _contributions(its: dict[str, Any], thumbs: _Thumbs) -> list[dict[str, Any]]:
    """SDG and mining contributions per iteration. The report is rebuilt after every stage, but an
    iteration's section only changes with its artefacts, so each is built once per process (this
    was 70 % of a rebuild: 23 of 33 ms after two iterations of the synthetic demo)."""
    out = []
    for lb in sorted(its, key=report_order):
        it = its[lb]
        key = (lb, *(_stamp(it.get(k)) for k in ("sdg_allocation", "mining_report", "sdg_csv", "mined_csv")),
               it.get("sdg_rows"), it.get("mined_rows"), it.get("n_train_rows"), thumbs.layout is None)
        if key not in _CONTRIB_MEMO:
            if len(_CONTRIB_MEMO) > 256:
                _CONTRIB_MEMO.clear()
            _CONTRIB_MEMO[key] = _contribution(lb, it, thumbs)
        if _CONTRIB_MEMO[key] is not None:
            out.append(_CONTRIB_MEMO[key])
    return out


def _examples(csv_path: str | None, target_col: str, per_target: int = 2) -> dict[str, list[dict[str, str]]]:
    """The first ``per_target`` rows of each target in an SDG / mined CSV (plain dicts)."""
    out: dict[str, list[dict[str, str]]] = {}
    if not csv_path:
        return out
    for r in pd.read_csv(csv_path, dtype=str, keep_default_na=False).to_dict("records"):
        rows = out.setdefault(r.get(target_col, ""), [])
        if len(rows) < per_target:
            rows.append(r)
    return out


def _contribution(lb: str, it: dict[str, Any], thumbs: _Thumbs) -> dict[str, Any] | None:
    alloc = _read_json(it.get("sdg_allocation"))
    mining = _read_json(it.get("mining_report"))
    if not alloc and not mining:
        return None
    sdg_ex = _examples(it.get("sdg_csv"), "sdg_target")
    mined_ex = _examples(it.get("mined_csv"), "mining_target")
    targets = []
    for t in (alloc or {}).get("targets", []):
        ex = sdg_ex.get(t["target_id"], [])
        targets.append({**t, "route": "sdg", "count": t["written"], "thumbs": [thumbs.pair(r) for r in ex]})
    for t in (mining or {}).get("targets", []):
        ex = mined_ex.get(t["target_id"], [])
        targets.append({**t, "route": "mining", "label": ", ".join(sorted({r["label"] for r in ex})),
                        "count": t["mined"], "thumbs": [thumbs.pair(r) for r in ex]})
    return {"label": lb, "targets": targets, "sdg_rows": it.get("sdg_rows"), "mined_rows": it.get("mined_rows"),
            "n_train_rows": it.get("n_train_rows")}


def render_report(results_dir: str | Path, extra: dict[str, Any] | None = None) -> Path:
    """Rebuild ``results_dir/report.html`` from the state (and the persisted ``extra``).

    Args:
        extra: optional additions from the pipeline bridge, kept in ``report_extra.json`` for the
            later rebuilds: ``trajectory`` (a list of ``{label, far_pct, kind}`` shown as the first
            chart, e.g. Phase 1 best → baseline → iterations → Phase 3), ``title``, ``notes`` (list
            of strings).
    """
    results_dir = Path(results_dir)
    extra_path = results_dir / EXTRA_NAME
    if extra is not None:
        atomic_write_json(extra_path, extra)
    extra = extra if extra is not None else (_read_json(str(extra_path)) if extra_path.exists() else None) or {}
    record = DeftState.load(results_dir)
    state = record.to_json()  # the page's template and its tables read the state as written
    its = state["iterations"]
    target = record.kpi["target"] if record.kpi["metric"] == "far_pct" else None
    points = [{"label": lb, "far_pct": it.far_pct, "kind": "final" if lb == FINAL_AUTOML else "deft"}
              for lb, it in sorted(record.iterations.items(), key=lambda kv: report_order(kv[0]))]
    charts = []
    if extra.get("trajectory"):
        charts.append(svg_chart(extra["trajectory"], target=target, title="Pipeline trajectory: FAR @ 100% recall (KPI set)"))
    charts.append(svg_chart(points, target=target, title="DEFT loop: FAR @ 100% recall on the KPI set"))
    thumbs = _Thumbs(state)
    cols = ("status", "stage_completed", "far_pct", "far_ci_low", "far_ci_high", "threshold", "auroc", "far_pct_at_99",
            "n_defects", "n_pass", "train_metric", "n_train_rows", "n_added_sdg", "n_added_mined", "source")
    rows = [{"label": lb, **{c: its[lb].get(c) for c in cols}} for lb in sorted(its, key=report_order)]
    for r in rows:  # the bridge records the pre-seed's train_metric as {metric, value, ...}
        if isinstance(r["train_metric"], dict):
            r["train_metric"] = r["train_metric"].get("value")
        if not isinstance(r["train_metric"], (int, float)):
            r["train_metric"] = None
    best = record.to_json() if (record := BestModel.load_if_any(results_dir, check_paths=False)) else None
    audit = (best or {}).get("audit") or {}
    audit_rows = {k: [(r, thumbs.pair(r)) for r in audit.get(k) or []] for k in ("escaped", "threshold_setters")} \
        if audit.get("done") else None
    page = _env.get_template("report.html.j2").render(
        state=state, extra=extra, charts=charts, rows=rows, rca=_rca_sections(its, thumbs),
        contributions=_contributions(its, thumbs), events=list(reversed(state["events"]))[:200],
        best=best, audit_rows=audit_rows, title=extra.get("title") or "deftpipe DEFT report")
    return atomic_write_text(results_dir / "report.html", page)


__all__ = ["render_report", "svg_chart"]
