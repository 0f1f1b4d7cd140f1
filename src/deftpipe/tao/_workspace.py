"""``deftpipe init --from-tao``: adopt a TAO Visual ChangeNet classify workspace as it is.

Nothing of the TAO workspace is copied or changed: its CSVs and images stay where the TAO spec (and
the ``--kpi-csv`` / ``--pool-csv`` flags) say, and the new deftpipe workspace refers to them by
absolute path. The new workspace holds only deftpipe's own files:

    <ws>/pipeline.yaml                 data paths -> the TAO files; adapter.kind: tao + the platform
    <ws>/specs/baseline_spec.yaml      the TAO spec translated (its original kept in tao.experiment)
    <ws>/specs/tao_search_space.yaml   the TAO backend's search space (TAO key names), both sweeps
    <ws>/.tao_sdk/                     the SDK's job store (created on the first job)

SDG is off in the written ``pipeline.yaml`` (its images would have to go into the TAO images folder).

The checks read files and stat images only (no image is decoded, so no cache is written next to them).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from deftpipe.errors import DataError, SpecError

SPACE_NAME = "specs/tao_search_space.yaml"
SEARCH_SPACE = Path(__file__).with_name("search_space.yaml")  # the TAO search space init copies into SPACE_NAME
STATE_DIR = ".tao_sdk"


def read_tao_spec(path: str | Path) -> dict[str, Any]:
    """The TAO document at ``path`` (``deftpipe._yaml``: safe, bounded), or one clear error."""
    from deftpipe._yaml import load_yaml_file
    from deftpipe.tao._spec import is_tao_document

    path = Path(path)
    if not path.is_file():
        raise SpecError(f"TAO spec {path} does not exist; pass the experiment YAML your TAO run uses")
    doc = load_yaml_file(path, "TAO spec")  # the bounded loader (deftpipe._yaml): no alias bombs, not empty
    if not is_tao_document(doc):
        raise SpecError(f"{path} is not a TAO Visual ChangeNet spec (no task / encryption_key / "
                        "dataset.classify.train_dataset); pass the experiment YAML of a classify run")
    return doc


def check_split(name: str, csv: Path, spec: Any) -> int:
    """Rows of ``csv`` after checking its columns and that every image file exists (stat only)."""
    from deftpipe.data import ImageLayout, read_dataset

    if not csv.is_file():
        raise DataError(f"{name} CSV {csv} does not exist; fix the path in the TAO spec or the flag")
    df = read_dataset(csv)
    layout = ImageLayout.from_spec(spec)
    missing = [p for folder_col in ("input_path", "golden_path")
               for f, o in zip(df[folder_col], df["object_name"], strict=True)
               for p in layout.files(f, o) if not p.is_file()]
    if missing:
        raise DataError(f"{name} CSV {csv}: {len(missing)} image file(s) missing under {spec.images_dir} "
                        f"(first: {missing[0]}); TAO reads images_dir/input_path/object_name[_light]image_ext — "
                        "fix images_dir, image_ext or input_map in the TAO spec")
    return len(df)


def adopt_tao_workspace(tao_spec: str | Path, dest: str | Path, *, kpi_csv: str | Path, pool_csv: str | Path,
                        platform: str = "virtualenv", log: Any = print) -> Path:
    """Create the deftpipe workspace ``dest`` over the TAO workspace ``tao_spec`` describes.

    Args:
        tao_spec: the TAO classify experiment YAML (its train/validation datasets become deftpipe's).
        dest: the new (or empty) deftpipe workspace folder.
        kpi_csv, pool_csv: the KPI test set and the labelled mining pool (TAO CSV format).
        platform: where TAO jobs run: virtualenv | docker | slurm | kubernetes.
        log: receives one line per note (TAO keys outside the pinned schema, the splits).
    Returns:
        ``dest``.
    Raises:
        SpecError: not a classify spec, unknown platform, missing train/validation dataset.
        DataError: a CSV or image is missing, or ``dest`` is not empty.
    """
    from deftpipe._tao_schema import PLATFORMS, AdapterChoice, TaoSettings
    from deftpipe.config import PipelineConfig, SweepConfig, dump_config
    from deftpipe.data import build_workspace
    from deftpipe.spec import dump_spec
    from deftpipe.tao._jobs import KUBERNETES_REFUSAL
    from deftpipe.tao._spec import spec_from_tao, unknown_keys

    if platform not in PLATFORMS:
        raise SpecError(f"--platform must be one of {', '.join(PLATFORMS)} (got '{platform}')")
    if platform == "kubernetes":
        raise SpecError(KUBERNETES_REFUSAL)
    tao_spec = Path(tao_spec).resolve()
    doc = read_tao_spec(tao_spec)
    dest = Path(dest).resolve()
    settings = TaoSettings(platform=platform, state_dir=str(dest / STATE_DIR))
    spec = spec_from_tao(doc, source=tao_spec, settings=settings)
    extra = unknown_keys(doc)
    if extra:
        log(f"note: {len(extra)} key(s) of {tao_spec.name} are not in nvidia-tao-core's ExperimentConfig "
            f"(kept verbatim; TAO may refuse them): {', '.join(extra)}")
    c = spec.dataset.classify
    if not c.train_csv or not c.val_csv:
        raise SpecError(f"TAO spec {tao_spec}: dataset.classify.train_dataset.csv_path and "
                        "validation_dataset.csv_path are both needed (the sweeps' training and validation sets)")
    splits = {"training": Path(c.train_csv), "validation": Path(c.val_csv),
              "KPI test": Path(kpi_csv).resolve(), "mining pool": Path(pool_csv).resolve()}
    for name, csv in splits.items():
        log(f"{name}: {csv} ({check_split(name, csv, spec)} rows, adopted in place)")
    c.test_csv = None  # the KPI set is read only by the DEFT evaluate stage, through pipeline.yaml
    if platform in ("docker", "slurm"):  # the jobs see the workspace and the TAO data at the same paths
        data = Path(os.path.commonpath([str(p.parent) for p in splits.values()] + [str(spec.images_dir)]))
        settings.mounts = [{"host_path": str(p), "container_path": str(p)} for p in (dest, data)]
        spec.adapter.tao = settings
    space = SweepConfig().model_copy(update={"search_space": SPACE_NAME})
    cfg = PipelineConfig.model_validate({"name": f"tao-{tao_spec.stem}"})
    cfg.data = cfg.data.model_copy(update={
        "train_csv": str(splits["training"]), "val_csv": str(splits["validation"]),
        "kpi_csv": str(splits["KPI test"]), "pool_csv": str(splits["mining pool"]),
        "images_dir": str(spec.images_dir)})
    # 3 epochs per trial: the search space offers TAO's policy 'step', whose StepLR needs num_epochs >= 3
    cfg.automl.phase1 = space.model_copy(update={"max_recommendations": 4, "num_epochs": max(3, space.num_epochs)})
    cfg.automl.phase3 = space.model_copy(update={"max_recommendations": 3, "num_epochs": max(3, space.num_epochs)})
    cfg.adapter = AdapterChoice(kind="tao", tao=settings)
    # SDG would have to put its synthetic images inside the TAO images folder (every CSV path is
    # relative to it), and deftpipe never writes there: the loop mines real pool rows only.
    cfg.deft.sdg = cfg.deft.sdg.model_copy(update={"count_per_target": 0, "hard_pass_per_target": 0})
    with build_workspace(dest) as tmp:
        dump_spec(spec, tmp / cfg.data.spec)
        (tmp / SPACE_NAME).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SEARCH_SPACE, tmp / SPACE_NAME)
        dump_config(cfg, tmp)
    return dest


__all__ = ["adopt_tao_workspace", "check_split", "read_tao_spec"]
