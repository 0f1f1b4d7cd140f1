"""``automl/phase1/quality_check.json``: Phase 1's verdict and what the 1 → 2 hand-off takes from it,
read and written in one place (a typed record; the JSON on disk is what the earlier code wrote).

The trial records inside (``winner``, ``reference``, ``handoff_choice``) stay mappings: they are the
sweep's ``best_rec.json`` rows and the challenge's verdict, typed where they are made.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from deftpipe._record_io import PathText, Record, read_json_file
from deftpipe._stored_paths import check_stored_paths
from deftpipe.errors import StateError

QUALITY_NAME = "quality_check.json"


class QualityCheck(Record):
    """Phase 1's winner (after the collapse check and the user's-spec challenge) and its verdict."""

    winner: dict[str, Any]  # the trial handed to the loop (the user's spec's when it was not beaten)
    verdict: dict[str, Any] = Field(default_factory=dict)  # metric, winner_score, untrained_score, beats_untrained
    best_rec_path: PathText
    reference: dict[str, Any] | None = None  # the user's spec trained once, scored on the KPI set
    handoff_choice: dict[str, Any] | None = None  # the paired challenge: winner vs the user's spec
    pred_counts: dict[str, Any] | None = None
    collapsed_original: bool = False
    untrained: dict[str, Any] | None = None
    rerun: dict[str, Any] | None = None
    notes: list[str] = Field(default_factory=list)
    stop_reason: str | None = None

    @property
    def metric(self) -> str:
        return str(self.verdict.get("metric") or "far_pct")

    @classmethod
    def load(cls, folder: str | Path) -> QualityCheck:
        """Read ``<folder>/quality_check.json`` (Phase 1's output folder).

        Raises:
            StateError: missing, not JSON, not an object, a field of the wrong type, or a path outside
                the run.
        """
        path = Path(folder) / QUALITY_NAME
        data = read_json_file(path, missing=f"{path} not found: Phase 1 did not finish; rerun `deftpipe run` "
                                            "to redo it", invalid="rerun `deftpipe run` with --new")
        if not isinstance(data, dict):
            raise StateError(f"{path} is not Phase 1's quality check (a JSON object); rerun `deftpipe run` with --new")
        if isinstance(data.get("untrained"), dict):
            # files written before it was dropped name the untrained model's deleted temporary checkpoint
            data["untrained"].pop("checkpoint", None)
        return cls.from_json(check_stored_paths(data, path), where=path)

    def save(self, folder: str | Path) -> Path:
        return self.write(Path(folder) / QUALITY_NAME)


__all__ = ["QUALITY_NAME", "QualityCheck"]
