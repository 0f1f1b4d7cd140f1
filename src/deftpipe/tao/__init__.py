"""The TAO backend: NVIDIA TAO Visual ChangeNet classify driven through nvidia-tao-sdk (docs/tao.md).

The second implementation of the model adapter interface, in a package of its own: spec translation
(``_spec``), job control on the SDK's platforms (``_jobs``), the adapter (``_adapter``), the pre-flight
checks (``_checks``), ``init --from-tao`` (``_workspace``) and the stand-in trainer (``standin.py``).
It uses the rest of deftpipe only through the other packages' front doors; nothing below it imports
it. Importing it registers ``adapter.kind: tao`` with :func:`deftpipe.model.register_backend` and TAO's
spec format with :func:`deftpipe.spec.register_reader` (the ``deftpipe`` command, the pipeline and
AutoML import it).
"""

from deftpipe._tao_schema import DEFAULT_IMAGE, PLATFORMS, AdapterChoice, TaoSection, TaoSettings
from deftpipe.model import register_backend
from deftpipe.spec import register_reader
from deftpipe.tao._adapter import TaoAdapter, pair_difference_embedding, read_status, tao_checkpoints
from deftpipe.tao._checks import add_tao_checks, batch_rule_of_thumb
from deftpipe.tao._jobs import LEDGER, STANDIN, TaoJobs, make_sdk, script_path, state_root
from deftpipe.tao._spec import (
    SHARED_KEYS,
    is_tao_document,
    pinned_keys,
    search_key,
    spec_from_tao,
    tao_experiment,
    unknown_keys,
)
from deftpipe.tao._workspace import SEARCH_SPACE, adopt_tao_workspace, read_tao_spec

register_backend("tao", TaoAdapter)
register_reader(is_tao_document, spec_from_tao)

__all__ = [
    "DEFAULT_IMAGE",
    "LEDGER",
    "PLATFORMS",
    "SEARCH_SPACE",
    "SHARED_KEYS",
    "STANDIN",
    "AdapterChoice",
    "TaoAdapter",
    "TaoJobs",
    "TaoSection",
    "TaoSettings",
    "add_tao_checks",
    "adopt_tao_workspace",
    "batch_rule_of_thumb",
    "is_tao_document",
    "make_sdk",
    "pair_difference_embedding",
    "pinned_keys",
    "read_status",
    "read_tao_spec",
    "script_path",
    "search_key",
    "spec_from_tao",
    "state_root",
    "tao_checkpoints",
    "tao_experiment",
    "unknown_keys",
]
