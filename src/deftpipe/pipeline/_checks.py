"""Read-only checks behind pre-flight sections 1–4: host, credentials, artefacts, datasets.

Each check returns a section ``{"name", "title", "items": [{"name", "value", "status"}], ...}``
and appends to ``blockers`` what must be fixed before a run. Nothing here writes a file (the
dataset checks only read; the image cache is the data layer's, outside ``results/``).
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from deftpipe import data
from deftpipe._argv import unknown_placeholders
from deftpipe._redact import scrub_clip
from deftpipe.automl import get_algorithm, load_search_space
from deftpipe.config import PipelineConfig, SweepConfig
from deftpipe.deft import EVALUATOR_PLACEHOLDERS
from deftpipe.errors import DeftpipeError
from deftpipe.model import COMMAND_PLACEHOLDERS as ADAPTER_PLACEHOLDERS
from deftpipe.spec import Spec

_ENV_REF = re.compile(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)\}?")


def item(name: str, value: Any, status: str | None = None) -> dict[str, Any]:
    return {"name": name, "value": value, "status": status}


def _mem_gib() -> tuple[float | None, float | None]:
    total = avail = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            key, val = line.split(":", 1)
            if key == "MemTotal":
                total = int(val.split()[0]) / 2**20
            elif key == "MemAvailable":
                avail = int(val.split()[0]) / 2**20
    except (OSError, ValueError):
        pass
    return total, avail


def _gpus() -> str:
    """GPU names via nvidia-smi (torch is never imported outside deftpipe.model)."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return "none (CPU only)"
    try:
        out = subprocess.run([smi, "--query-gpu=name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "nvidia-smi present but not answering (CPU will be used)"
    return "; ".join(out.splitlines()) or "none (CPU only)"


def host_section(ws: Path, spec: Spec | None) -> dict[str, Any]:
    total, avail = _mem_gib()
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:
        cores = os.cpu_count()
    try:
        torch_version = metadata.version("torch")
    except metadata.PackageNotFoundError:
        torch_version = "not installed"
    free = shutil.disk_usage(ws).free / 2**30
    items = [
        item("workspace", str(ws)),
        item("CPU cores", f"{cores} usable of {os.cpu_count()}"),
        item("memory", f"{total:.1f} GiB total, {avail:.1f} GiB available" if total else "unknown"),
        item("GPU", _gpus()),
        item("training device (spec)", spec.train.device if spec else "?"),
        item("torch threads", os.environ.get("DEFTPIPE_NUM_THREADS") or (spec.train.num_threads if spec else 0)
             or "all cores"),
        item("disk free", f"{free:.1f} GiB"),
        item("platform", f"{platform.platform()} · Python {sys.version.split()[0]} · torch {torch_version}"),
    ]
    return {"name": "host", "title": "Workspace, host and platform", "items": items}


def _storage_url(storage: str | None):
    if not storage or "://" not in storage:
        return None
    from sqlalchemy.engine import make_url

    try:
        return make_url(storage)
    except Exception:  # noqa: BLE001 - an unparsable URL is reported by the artefact check
        return None


def _env_refs(argvs: list[list[str] | None]) -> list[str]:
    names: list[str] = []
    for argv in argvs:
        for token in argv or []:
            names += [n for n in _ENV_REF.findall(token) if n not in names]
    return names


def credentials_section(cfg: PipelineConfig, spec: Spec | None, blockers: list[str]) -> dict[str, Any]:
    """Credentials and environment variables the configured back-ends need: SET/UNSET, never values."""
    items = []
    for phase, sweep in (("Phase 1", cfg.automl.phase1), ("Phase 3", cfg.automl.phase3)):
        url = _storage_url(sweep.storage)
        if url is None or url.get_backend_name() == "sqlite":
            continue
        where = f"{phase} storage {url.render_as_string(hide_password=True)}"
        items.append(item(f"{where}: password in URL", None, "SET" if url.password else "UNSET"))
        if url.get_backend_name().startswith("postgres") and not url.password:
            for var in ("PGPASSWORD", "PGPASSFILE"):
                items.append(item(f"{where}: ${var}", None, "SET" if os.environ.get(var) else "UNSET"))
    argvs: list[list[str] | None] = []
    if spec is not None and spec.adapter.kind == "command":
        a = spec.adapter
        argvs += [a.train, a.evaluate, a.infer, a.embed]
    argvs.append(cfg.kpi.evaluator_command)
    for var in _env_refs(argvs):
        is_set = var in os.environ
        items.append(item(f"${var} (used by an external command template)", None, "SET" if is_set else "UNSET"))
        if not is_set:
            blockers.append(f"environment variable ${var} is used by a command template but is not set; "
                            f"export it before `deftpipe run`")
    if not items:
        items.append(item("none required", "local sweep storage, built-in torch adapter", "ok"))
    return {"name": "credentials", "title": "Credentials and environment (SET/UNSET, values never shown)",
            "items": items}


def _check_storage(name: str, sweep: SweepConfig, blockers: list[str]) -> dict[str, Any]:
    if not sweep.enabled:
        return item(f"{name} storage", "phase disabled", "ok")
    if not sweep.storage:
        return item(f"{name} storage", "local file in the phase's output folder (created on run)", "ok")
    url = _storage_url(sweep.storage)
    if url is None:  # a journal file path
        parent = Path(sweep.storage).expanduser().resolve().parent
        ok = parent.is_dir() and os.access(parent, os.W_OK)
        if not ok:
            blockers.append(f"{name} storage {sweep.storage}: folder {parent} is missing or not writable")
        return item(f"{name} storage", sweep.storage, "PRESENT" if ok else "MISSING")
    shown = url.render_as_string(hide_password=True)
    if url.get_backend_name() == "sqlite":
        db = Path(url.database or "").expanduser()
        ok = db.resolve().parent.is_dir()
        if not ok:
            blockers.append(f"{name} storage {shown}: folder {db.parent} does not exist")
        return item(f"{name} storage", shown, "PRESENT" if ok else "MISSING")
    from sqlalchemy import create_engine, text

    try:
        args = {"connect_timeout": 5} if url.get_backend_name().startswith("postgres") else {}
        engine = create_engine(url, connect_args=args)
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
        return item(f"{name} storage", f"{shown} (reachable)", "PRESENT")
    except Exception as e:  # noqa: BLE001 - any driver error means "not reachable"
        reason = scrub_clip(str(e).splitlines()[0] if str(e) else type(e).__name__, 160)
        if url.password:
            reason = reason.replace(url.password, "***")
        blockers.append(f"{name} storage {shown} is not reachable ({reason}); start the database or fix "
                        f"automl.{name.lower().replace(' ', '')}.storage in pipeline.yaml")
        return item(f"{name} storage", f"{shown} (not reachable)", "MISSING")


def read_only(folder: Path) -> str | None:
    """Why the run could not write into ``folder`` (a read-only file system, or no write permission), else None."""
    try:
        if os.statvfs(folder).f_flag & os.ST_RDONLY:
            return "it is on a read-only file system"
    except OSError:
        return None
    if not os.access(folder, os.W_OK | os.X_OK):
        return "this user may not write into it"
    return None


def settings_blockers(ws: Path, cfg: PipelineConfig, spec: Spec | None, blockers: list[str]) -> None:
    """What the run would otherwise only find out after training started: a workspace it cannot
    write into, an unknown algorithm or metric, a search space that does not parse, a placeholder no
    template knows, a device the installed torch cannot use."""
    from deftpipe.model import device_problem  # late: imports torch

    for folder in (ws, ws / "results"):
        why = folder.is_dir() and read_only(folder)
        if why:
            blockers.append(f"{folder} is read-only ({why}): the run writes its results, specs and sweeps into the "
                            "workspace; make it writable, or copy the workspace somewhere writable")
            break

    for key, sweep in (("phase1", cfg.automl.phase1), ("phase3", cfg.automl.phase3)):
        if not sweep.enabled:
            continue
        try:
            get_algorithm(sweep.algorithm)
            if sweep.search_space and cfg.path(ws, sweep.search_space).is_file():
                load_search_space(cfg.path(ws, sweep.search_space))
        except DeftpipeError as e:
            blockers.append(f"automl.{key}: {e}")
    if cfg.kpi.evaluator_command:
        bad = unknown_placeholders(cfg.kpi.evaluator_command, EVALUATOR_PLACEHOLDERS)
        if bad:
            blockers.append(f"kpi.evaluator_command uses unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}"
                            f"; available: {', '.join('{' + p + '}' for p in EVALUATOR_PLACEHOLDERS)}")
    if spec is None:
        return
    problem = device_problem(spec.train.device)
    if problem:
        blockers.append(problem)
    if spec.adapter.kind == "command":
        for op in ("train", "evaluate", "infer", "embed"):
            bad = unknown_placeholders(getattr(spec.adapter, op) or [], ADAPTER_PLACEHOLDERS)
            if bad:
                blockers.append(f"adapter.{op} uses unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}"
                                " (see docs/model.md for the list)")


def _file_item(name: str, path: Path, blockers: list[str], fix: str) -> dict[str, Any]:
    ok = path.exists()
    if not ok:
        blockers.append(f"{name} {path} is missing; {fix}")
    return item(name, str(path), "PRESENT" if ok else "MISSING")


def artefacts_section(ws: Path, cfg: PipelineConfig, spec: Spec | None, blockers: list[str]) -> dict[str, Any]:
    items = [_file_item("model spec", cfg.path(ws, cfg.data.spec), blockers, "fix data.spec in pipeline.yaml")]
    if spec is not None:
        images = cfg.path(ws, cfg.data.images_dir)  # the rule of every command (data._layout.layout_for)
        items.append(_file_item("images folder", images, blockers, "fix data.images_dir in pipeline.yaml"))
        if spec.adapter.kind == "torch" and spec.images_dir.resolve() != images.resolve():
            items.append(item("spec images_dir", f"{spec.images_dir} is not used: inside a workspace every command "
                              f"reads images from data.images_dir ({images})", "note"))
        pre = spec.train.pretrained_model_path
        if pre:
            items.append(_file_item("pretrained weights", Path(pre), blockers,
                                    "fix train.pretrained_model_path in the spec"))
        else:
            items.append(item("pretrained weights", "none configured (trained from scratch)", "ok"))
        if spec.adapter.kind == "command":
            for op in ("train", "evaluate", "infer", "embed"):
                argv = getattr(spec.adapter, op)
                exe = argv[0] if argv else None
                found = shutil.which(exe) if exe else None
                if not found:
                    blockers.append(f"external trainer command for '{op}' ({exe or 'not configured'}) "
                                    f"is not on PATH; fix adapter.{op} in the spec")
                items.append(item(f"external trainer: {op}", found or exe or "not configured",
                                  "PRESENT" if found else "MISSING"))
        else:
            items.append(item("external trainer command", f"not used ({spec.adapter.kind} adapter)", "ok"))
    if cfg.kpi.evaluator_command:
        exe = cfg.kpi.evaluator_command[0]
        found = shutil.which(exe)
        if not found:
            blockers.append(f"KPI evaluator command {exe} is not on PATH; fix kpi.evaluator_command")
        items.append(item("KPI evaluator command", found or exe, "PRESENT" if found else "MISSING"))
    for name, sweep in (("Phase 1", cfg.automl.phase1), ("Phase 3", cfg.automl.phase3)):
        if sweep.enabled and sweep.search_space:
            items.append(_file_item(f"{name} search space", cfg.path(ws, sweep.search_space), blockers,
                                    "fix the search_space path in pipeline.yaml"))
        items.append(_check_storage(name, sweep, blockers))
    return {"name": "artefacts", "title": "Artefacts (PRESENT/MISSING)", "items": items}


SPLITS = (("train", "train_csv"), ("validation", "val_csv"), ("KPI test", "kpi_csv"), ("mining pool", "pool_csv"),
          ("holdout", "holdout_csv"))
NO_HOLDOUT = "no holdout: the run will end without an audit (no estimate on boards no choice has seen)"


def dataset_section(ws: Path, cfg: PipelineConfig, spec: Spec | None, blockers: list[str],
                    warnings: list[str]) -> dict[str, Any]:
    """Counts per split, label distribution, validation and the leakage check."""
    layout = data.layout_for(spec, ws) if spec is not None else None
    rows, csvs, labels = [], [], set()
    for split, key in SPLITS:
        csv = cfg.path(ws, getattr(cfg.data, key))
        row: dict[str, Any] = {"split": split, "csv": str(csv), "rows": 0, "pass": 0, "defects": 0,
                               "boards": 0, "labels": {}, "status": "ok"}
        rows.append(row)
        if not csv.is_file():
            row["status"] = "MISSING"
            msg = f"{split} CSV {csv} is missing; fix data.{key} in pipeline.yaml"
            if split == "holdout":
                row["status"] = "none"
                msg = f"{NO_HOLDOUT}; add {cfg.data.holdout_csv} (boards used nowhere else) to get one"
            (warnings if split in ("mining pool", "holdout") else blockers).append(msg)
            continue
        try:
            known = spec.model.classes if spec is not None and spec.model.classes else None
            size = spec.model.input_size if spec is not None and spec.adapter.kind == "torch" else None
            df = (data.validate_dataset(csv, layout=layout, known_labels=known, input_size=size,
                                        require_both_classes=split != "mining pool")
                  if layout is not None else data.read_dataset(csv))
        except DeftpipeError as e:
            row["status"] = "INVALID"
            blockers.append(f"{split} CSV {csv} failed validation: {e}")
            df = data.read_dataset(csv, require_rows=False)
        counts = df["label"].value_counts().to_dict()
        defects = data.is_defect(df["label"])
        row.update(rows=len(df), defects=int(defects.sum()), pass_=int((~defects).sum()),
                   boards=int(df["boardname"].nunique()),
                   labels={str(k): int(v) for k, v in sorted(counts.items())})
        row["pass"] = row.pop("pass_")
        labels.update(row["labels"])
        csvs.append(csv)
    leak: dict[str, Any] = {"checked": [str(c) for c in csvs], "n_overlapping": None}
    if len(csvs) >= 2 and layout is not None:
        try:
            report = data.find_leaks(csvs, [layout] * len(csvs), near=True)
            leak["n_overlapping"] = int(report.n_overlapping)
            leak["n_near_duplicates"] = report.n_near
            leak["near_duplicates"] = [{"a": p.a, "b": p.b, "rows": p.near, "examples": p.near_examples}
                                       for p in report.pairs if p.near]
            holdout = str(cfg.path(ws, cfg.data.holdout_csv))
            for p in report.pairs:
                if not p.near:
                    continue
                msg = (f"{p.near} row(s) of {p.b} are near-duplicates of rows of {p.a} (the same picture with a few "
                       f"pixels changed), e.g. {p.near_examples[0]}; `deftpipe data leakage` lists them")
                # the audit's claim is "boards no split has touched": a near-copy in the holdout breaks it
                (blockers if holdout in (p.a, p.b) else warnings).append(msg)
        except DeftpipeError as e:
            blockers.append(f"leakage check could not run: {e}")
        if leak["n_overlapping"]:
            blockers.append(f"{leak['n_overlapping']} overlapping rows between the splits; run "
                            f"`deftpipe data leakage` on the CSVs to list them and remove the duplicates")
    line = (f"{leak['n_overlapping']} overlapping rows" if leak["n_overlapping"] is not None
            else "leakage check not run")
    holdout = rows[-1]
    audit = (f"audit on {holdout['boards']} holdout board(s), {holdout['defects']} defects, {holdout['pass']} PASS "
             "(read only after the deliverable is fixed)" if holdout["status"] == "ok" else NO_HOLDOUT)
    return {"name": "datasets", "title": "Datasets", "table": rows, "label_names": sorted(labels),
            "leakage": leak, "items": [item("leakage check (identity + image content)", line,
                                            "ok" if leak["n_overlapping"] == 0 else "BLOCKER"),
                                       item("near-duplicates (decoded pixels)",
                                            f"{leak.get('n_near_duplicates')} rows" + "".join(
                                                f"; {n['rows']} of {Path(n['b']).name} ≈ {Path(n['a']).name}"
                                                for n in leak.get("near_duplicates", [])),
                                            "ok" if not leak.get("n_near_duplicates") else "WARNING"),
                                       item("audit", audit, "ok" if holdout["status"] == "ok" else "none")]}


__all__ = ["artefacts_section", "credentials_section", "dataset_section", "host_section", "item"]
