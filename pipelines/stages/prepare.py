"""DVC stage `prepare`: check the raw data loads, compute each class's normalisation constants.

Reads only ``data.*`` (and the dataset itself); writes outputs/prepare/summary.json with the file
checksums, per-class counts and the normalisation constants training will use. The constants land
in ``data.cache_dir`` too, so the train stage finds them computed.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from fcdd.cli.messages import one_line_warnings
from pipelines.stages.common import PREPARE_SUMMARY, stage_classes, stage_config, write_json

MAX_HASHED_FILES = 64  # larger trees (MVTec, folders) are summarised by count and size only
SEED = 0  # the seeded subsets (data.train_limit) of seed 0; other seeds compute theirs in training


def file_md5(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.md5()
    with path.open("rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def describe_root(root: Path) -> dict:
    """Checksums of a small raw dataset (Fashion-MNIST's four files), count and size otherwise."""
    if not root.exists():
        raise SystemExit(
            f"data.root {root}: does not exist. Fashion-MNIST: run `bash scripts/setup_data.sh` or "
            "`dvc pull data.dvc`; other datasets: see README.md (Datasets)."
        )
    files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
    info: dict = {"files": len(files), "bytes": sum(p.stat().st_size for p in files)}
    if len(files) <= MAX_HASHED_FILES:
        base = root.parent if root.is_file() else root
        info["md5"] = {str(p.relative_to(base)): file_md5(p) for p in files}
    return info


def main() -> None:
    from fcdd.data import build_datasets
    from fcdd.errors import FCDDError

    cfg = stage_config()
    root = Path(cfg.data.root)
    summary: dict = {"dataset": cfg.data.dataset, "root": str(root), "raw": describe_root(root)}
    classes: dict = {}
    for cls in stage_classes(cfg):
        try:
            bundle = build_datasets(cfg, cls, SEED)
        except FCDDError as e:  # a user's error: one line naming it, no traceback
            raise SystemExit(f"prepare: {type(e).__name__}: {e}") from None
        cls = str(bundle.summary.get("class", cls))  # the canonical name: '0' is 't-shirt-top'
        classes[cls] = {"preprocess": bundle.preprocess, "counts": bundle.summary}
        print(f"prepare: {cfg.data.dataset} class {cls!r}: {bundle.preprocess.get('normalisation')}")
    summary["classes"] = classes
    write_json(PREPARE_SUMMARY, summary)
    print(f"prepare: wrote {PREPARE_SUMMARY}")


if __name__ == "__main__":
    with one_line_warnings("prepare"):
        main()
