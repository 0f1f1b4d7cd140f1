"""Self-describing checkpoints: ``model_epoch_<EEE>_step_<SSS>.pth``.

A checkpoint is a plain dict (loadable with ``torch.load(..., weights_only=True)``)::

    {"format": "deftpipe.siamese", "version": 1, "deftpipe_version": "0.1.0",
     "state_dict": {...tensors...}, "spec": {...the resolved spec...},
     "metrics": {...validation metrics of that epoch...}, "epoch": int, "step": int}

The architecture always comes from the checkpoint's own spec, so evaluate/infer/embed cannot
build a different model; a warm start whose spec asks for another shape is a CheckpointError.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import torch

from deftpipe import __version__
from deftpipe._fs import atomic_write_bytes
from deftpipe._redact import scrub_clip
from deftpipe.errors import CheckpointError, DeftpipeError
from deftpipe.model._checkpoint_names import FORMAT, NAME_RE, VERSION, checkpoint_name
from deftpipe.model._network import NetConfig, SiameseChangeNet
from deftpipe.spec import Spec, spec_from_dict, spec_to_dict

REQUIRED_KEYS = ("format", "version", "state_dict", "spec", "metrics", "epoch", "step")


def save_checkpoint(path: Path, model: SiameseChangeNet, spec: Spec, metrics: dict[str, Any],
                    *, epoch: int, step: int) -> Path:
    """Write a checkpoint atomically (a crash never leaves half a file under the final name)."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "deftpipe_version": __version__,
        "state_dict": {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()},
        "spec": spec_to_dict(spec),
        "metrics": metrics,
        "epoch": int(epoch),
        "step": int(step),
    }
    buf = io.BytesIO()  # serialised in memory: a full disk then fails as an OSError naming the file
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Load and check a checkpoint dict.

    Raises:
        CheckpointError: missing, truncated/corrupt, not a deftpipe checkpoint, or keys missing.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; pass a model_epoch_<EEE>_step_<SSS>.pth file")
    if path.is_file() and path.stat().st_size == 0:
        raise CheckpointError(f"checkpoint {path} is empty (0 bytes): a copy or save was cut short — use another "
                              "checkpoint or retrain")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many types for a damaged file
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(err).__name__}: {scrub_clip(str(err).splitlines()[0] if str(err) else '', 160)}); "
            "the file is truncated or corrupt — use another checkpoint or retrain"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {path} is not a deftpipe model checkpoint (format "
                              f"{ckpt.get('format') if isinstance(ckpt, dict) else type(ckpt).__name__!r}, "
                              f"expected {FORMAT!r})")
    missing = [k for k in REQUIRED_KEYS if k not in ckpt]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {', '.join(missing)}; it was not written by "
                              "deftpipe or is damaged — retrain")
    if ckpt["version"] > VERSION:
        raise CheckpointError(f"checkpoint {path} has format version {ckpt['version']}, newer than this "
                              f"deftpipe understands ({VERSION}); upgrade deftpipe")
    return ckpt


def checkpoint_spec(ckpt: dict[str, Any], path: str | Path) -> Spec:
    try:
        return spec_from_dict(ckpt["spec"], where=f"inside checkpoint {path}")
    except DeftpipeError as err:
        raise CheckpointError(str(err)) from None


def load_weights(model: SiameseChangeNet, state_dict: dict[str, torch.Tensor], path: str | Path) -> None:
    """Copy weights into ``model``; any missing, extra or mis-shaped tensor is a CheckpointError."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state_dict))
    extra = sorted(set(state_dict) - set(own))
    wrong = [f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}" for k, v in own.items()
             if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    if missing or extra or wrong:
        detail = "; ".join(filter(None, [
            f"missing {', '.join(missing[:3])}" if missing else "",
            f"unexpected {', '.join(extra[:3])}" if extra else "",
            f"shape (checkpoint vs model) {', '.join(wrong[:3])}" if wrong else "",
        ]))
        raise CheckpointError(
            f"checkpoint {path} does not fit this model ({detail}); it was trained with another "
            "model section (width/depth/fusion/num_input/num_classes) — use a matching spec or retrain"
        )
    bad = [k for k, v in state_dict.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"checkpoint {path} holds NaN/inf weights ({', '.join(bad[:3])}); it comes from a "
                              "diverged run — use an earlier checkpoint of that run or retrain")
    model.load_state_dict(state_dict)


def load_model(path: str | Path) -> tuple[SiameseChangeNet, Spec, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, with its weights, in eval mode."""
    ckpt = read_checkpoint(path)
    spec = checkpoint_spec(ckpt, path)
    model = SiameseChangeNet(NetConfig.from_spec(spec))
    load_weights(model, ckpt["state_dict"], path)
    model.eval().to(memory_format=torch.channels_last)
    return model, spec, ckpt


__all__ = ["NAME_RE", "checkpoint_name", "checkpoint_spec", "load_model", "load_weights",
           "read_checkpoint", "save_checkpoint"]
