"""One module per dataset (fcdd/data/datasets/): each states its facts, the registry finds them by
name, the configuration and `fcdd init` read them without importing torch, every image folder uses
one extension list, and a new dataset is one new module: the worked example of docs/architecture.md,
run as written."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

import fcdd.data.datasets as registry
from fcdd.cli import main
from fcdd.config import ConfigError, explain_config, load_config
from fcdd.data import build_datasets, class_names, dataset_names, dataset_spec
from fcdd.data.files import list_images
from fcdd.data.image_io import IMAGE_EXTENSIONS, is_image_file
from fcdd.data.outlier_exposure import OutlierExposure
from fcdd.data.spec import DatasetSpec
from fcdd.init_params import default_presets

REPO = Path(__file__).resolve().parents[2]
DATASETS_DIR = REPO / "fcdd" / "data" / "datasets"


def test_every_module_of_the_package_is_a_dataset_with_its_facts():
    modules = sorted(p.stem for p in DATASETS_DIR.glob("*.py") if p.stem != "__init__")
    assert dataset_names() == tuple(modules)
    for name in modules:
        spec = dataset_spec(name)
        assert isinstance(spec, DatasetSpec) and spec.name == name and spec.title
        assert spec.sigma > 0 and 0 < spec.quantile <= 1
        preprocess = {"input_size": 32, "resize": 36, "normalisation": {"kind": "none"}}
        assert callable(spec.train_transform(preprocess, 36))


def test_the_facts_that_were_spread_over_eight_places():
    """σ and q (docs/method.md §3), ground-truth maps (the loss choice), any input size
    (data.resize), the CPU preset of `fcdd init`, and whether OE may not hold the test classes."""
    facts = {
        n: (s.sigma, s.quantile, s.has_maps, s.any_size, s.cpu_preset, s.oe_reject_own)
        for n in dataset_names()
        for s in [dataset_spec(n)]
    }
    assert facts == {
        "cifar10": (1.2, 0.85, False, False, "cpu", True),
        "fmnist": (1.2, 0.85, False, False, "cpu", False),
        "folder": (10.0, 0.97, True, True, "cpu_mvtec", False),
        "imagenet30": (8.0, 0.97, False, False, None, False),
        "mvtec": (12.0, 0.99, True, True, "cpu_mvtec", False),
    }
    assert len(dataset_spec("imagenet30").oe_exclude) == 60  # 30 names and their 30 WordNet ids
    assert "Sandal" in dataset_spec("fmnist").oe_exclude and dataset_spec("folder").oe_exclude == ()


def test_configuration_and_init_read_the_dataset_module(monkeypatch):
    spec = dataset_spec("mvtec")
    cfg = load_config(None, ["data.dataset=mvtec"])
    assert (cfg.sigma, cfg.quantile) == (spec.sigma, spec.quantile)
    monkeypatch.setattr(type(spec), "sigma", 7.5)
    monkeypatch.setattr(type(spec), "cpu_preset", "small")
    assert cfg.sigma == 7.5 and default_presets("mvtec", cpu=True) == ["mvtec", "small"]
    assert default_presets("mvtec", cpu=False) == ["mvtec"] and default_presets("imagenet30", cpu=True) == [
        "imagenet30"
    ]
    monkeypatch.setattr(type(spec), "any_size", False)
    with pytest.raises(ConfigError, match="keep_aspect applies to folder; mvtec has fixed inputs"):
        load_config(None, ["data.dataset=mvtec", "data.resize=keep_aspect", "model.input_size=224"])
    with pytest.raises(
        ConfigError, match=r"data\.dataset: 'svhn' is not one of " + ", ".join(dataset_names())
    ):
        load_config(None, ["data.dataset=svhn"])


def test_importing_the_configuration_loads_no_torch():
    """The configuration reads every dataset module when a params file loads: `fcdd config` and
    `fcdd init` stay quick because those modules import torch only inside their loaders."""
    code = (
        "import sys; from fcdd.config import load_config; "
        "cfg = load_config('params.yaml'); print(cfg.sigma, cfg.quantile); "
        "print(sorted(m for m in ('torch', 'torchvision') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[1] == "[]", out.stdout


def test_one_list_of_image_extensions(tmp_path):
    """Dataset folders, outlier-exposure sources and predict's folder search read the same files."""
    assert is_image_file("a/B.PNG") and is_image_file("x.gif") and not is_image_file("notes.txt")
    assert all(e.startswith(".") and e == e.lower() for e in IMAGE_EXTENSIONS)
    rng = np.random.default_rng(0)
    for name in ("a.png", "b.gif", "c.JPG"):
        Image.fromarray(rng.integers(0, 256, (12, 12, 3), dtype=np.uint8)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    skipped: list = []
    with pytest.warns(UserWarning, match="notes.txt"):
        listed = list_images(tmp_path, strict=False, skipped=skipped)
    assert [Path(p).name for p in listed] == ["a.png", "b.gif", "c.JPG"] and len(skipped) == 1
    assert sorted(OutlierExposure.from_source(str(tmp_path), 3, 8, seed=0).names) == [
        "a.png",
        "b.gif",
        "c.JPG",
    ]


# ---------------------------------------------------------------- adding a dataset: the docs' example
def _section(text: str) -> str:
    return text[text.index("## Adding a dataset") :]


def _doc_blocks() -> tuple[str, dict]:
    section = _section((REPO / "docs" / "architecture.md").read_text())
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    params = yaml.safe_load(re.search(r"```yaml\n(.*?)```", section, re.S).group(1))
    return code, params


@pytest.fixture
def npz_dataset(tmp_path, monkeypatch):
    """The docs' module, added as fcdd/data/datasets/npz.py would be (here from a folder beside it)."""
    code, _ = _doc_blocks()
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "npz.py").write_text(code)
    monkeypatch.setattr(registry, "__path__", [*registry.__path__, str(plugins)])
    registry._registry.cache_clear()
    yield
    sys.modules.pop("fcdd.data.datasets.npz", None)
    registry._registry.cache_clear()


def _write_parts(root: Path) -> None:
    rng = np.random.default_rng(0)
    root.mkdir()
    for cls, level in (("bolt", 90), ("nut", 150)):
        train = np.clip(rng.normal(level, 12, (40, 28, 28)), 0, 255).astype(np.uint8)
        test = np.clip(rng.normal(level, 12, (16, 28, 28)), 0, 255).astype(np.uint8)
        test[8:, 8:18, 8:18] = 255  # defective: a bright square
        np.savez(root / f"{cls}.npz", train=train, test=test, test_labels=np.r_[np.zeros(8), np.ones(8)])


def test_a_new_dataset_is_one_module(npz_dataset, tmp_path, monkeypatch, capsys):
    _, shown = _doc_blocks()
    root = tmp_path / "parts"
    _write_parts(root)
    monkeypatch.chdir(tmp_path)
    shown["data"]["root"] = str(root)
    params = tmp_path / "parts.yaml"
    params.write_text(yaml.safe_dump(shown))
    assert "npz" in dataset_names()

    rows = {k: w for k, _, w in explain_config(params)}
    assert (
        "null -> 1.2 for npz" in rows["model.sigma"] and "null -> 0.85 for npz" in rows["evaluation.quantile"]
    )
    cfg = load_config(params, ["anomalies.kind=confetti", "data.cache_dir=cache"])
    assert class_names(cfg) == ["bolt", "nut"]
    bundle = build_datasets(cfg, "nut", 0)
    assert len(bundle.train) == 40 and list(bundle.test.labels) == [0] * 8 + [1] * 8
    assert bundle.preprocess["input_size"] == 28 and bundle.train.batch_transform is not None

    overrides = ["train.epochs=1", "train.batch_size=16", "train.device=cpu", "train.threads=1"]
    overrides += [
        "data.num_workers=0",
        "data.cache_dir=cache",
        "anomalies.kind=confetti",
        "tracking.enabled=false",
    ]
    args = ["train", "--params", str(params), "--classes", "nut", "--seeds", "0"]
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        assert main([*args, *(a for o in overrides for a in ("-o", o))]) == 0
    metrics = json.loads((tmp_path / "runs" / "npz" / "nut" / "seed0" / "metrics.json").read_text())
    assert metrics["dataset"] == "npz" and 0.0 <= metrics["image_auc"] <= 1.0
