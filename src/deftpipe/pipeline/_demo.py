"""``deftpipe demo [DIR]``: the synthetic workspace, then all three phases with small budgets.

The budgets are the synthetic "small" workspace's own ``pipeline.yaml`` (written by the data
layer, visible and editable in DIR) with the few overrides below, applied only when the demo
creates the workspace: measured, they keep the whole demo near 30 s on 2 CPU cores and give the
loop enough rounds to show its effect (see docs/pipeline.md for the measurements). An existing workspace in DIR is used as it is, and a
rerun resumes an unfinished demo run.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from rich.console import Console

from deftpipe._bars import counting_bar
from deftpipe.config import CONFIG_NAME, PipelineConfig, dump_config, load_config
from deftpipe.data import make_synthetic_workspace
from deftpipe.pipeline._run import run_pipeline
from deftpipe.spec import set_dotted

DEFAULT_DIR = "deftpipe_demo"
#: pipeline.yaml overrides (dotted keys) of the demo, on top of the synthetic "small" defaults.
DEMO_OVERRIDES: dict[str, Any] = {
    "automl.phase1.max_recommendations": 3,  # 3 trials x 2 epochs: 1-epoch trials collapse on this data
    "automl.phase1.num_epochs": 2,
    "deft.max_iterations": 3,  # three SDG + mining + retrain rounds, 4 epochs each (measured in docs/pipeline.md)
    "deft.num_epochs": 4,
    "automl.phase3.max_recommendations": 2,  # warm-started from the loop's best: 1 epoch each is enough
    "automl.phase3.num_epochs": 1,
}


def apply_overrides(ws: Path, overrides: dict[str, Any]) -> None:
    """Set dotted keys in ``<ws>/pipeline.yaml`` (validated by loading it back)."""
    if not overrides:
        return

    data = load_config(ws).model_dump(mode="json")
    for key, value in overrides.items():
        set_dotted(data, key, value)
    dump_config(PipelineConfig.model_validate(data), ws)


def run_demo(dest: str | Path = DEFAULT_DIR, *, console: Console | None = None, size: str = "small",
             seed: int = 0, show_progress: bool = True) -> dict[str, Any]:
    """Create the synthetic workspace in ``dest`` (unless one is there) and run the pipeline approved."""
    console = console or Console()
    dest = Path(dest)
    if not (dest / CONFIG_NAME).is_file():
        console.print(f"creating the synthetic '{size}' workspace in {dest} …", highlight=False)
        bar = counting_bar(console, "drawing image pairs") if show_progress else contextlib.nullcontext(None)
        with bar as progress:
            make_synthetic_workspace(dest, seed=seed, size=size, progress=progress)
        apply_overrides(dest, DEMO_OVERRIDES)
    return run_pipeline(dest, yes=True, console=console, show_progress=show_progress)


__all__ = ["DEFAULT_DIR", "DEMO_OVERRIDES", "run_demo"]
