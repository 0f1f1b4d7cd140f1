"""deftpipe: AutoML baseline -> DEFT data-improvement loop -> AutoML refinement for AOI classifiers."""

from deftpipe.errors import DataError, DeftpipeError, SpecError, StateError

__version__ = "0.1.0"

__all__ = ["DataError", "DeftpipeError", "SpecError", "StateError", "__version__"]
