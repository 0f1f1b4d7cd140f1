"""The audit (docs/contracts.md §11): a fixed deliverable scored on the holdout, the only honest estimate.

Front doors: :func:`audit_checkpoint` (any checkpoint + threshold + holdout CSV, through the model
adapter) and :func:`audit_run` (a finished run's ``best_model.json``, the last stage of
``deftpipe run`` and ``deftpipe audit RUN_DIR``). Nothing here chooses a model or a threshold.
"""

from deftpipe.audit._compare import side_by_side, side_by_side_markdown
from deftpipe.audit._core import FIGURES, audit_checkpoint, audit_scores
from deftpipe.audit._render import audit_line, audit_markdown, holdout_headline
from deftpipe.audit._run_audit import (
    AUDIT_LABEL,
    SELECTION_LABEL,
    AuditDetails,
    AuditSummary,
    audit_run,
    holdout_csv,
    reference_models,
)

__all__ = [
    "AUDIT_LABEL",
    "FIGURES",
    "SELECTION_LABEL",
    "AuditDetails",
    "AuditSummary",
    "audit_checkpoint",
    "audit_line",
    "audit_markdown",
    "audit_run",
    "audit_scores",
    "holdout_csv",
    "holdout_headline",
    "reference_models",
    "side_by_side",
    "side_by_side_markdown",
]
