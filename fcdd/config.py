"""The one typed configuration of a run, read from ``params.yaml``.

Resolution order (later wins): dataclass defaults < presets named by ``preset`` (in order)
< the sections written in params.yaml < command-line overrides (``train.epochs=3``).
The CLI, the DVC stages and the Prefect flows all call :func:`load_config`.
"""

from __future__ import annotations

import copy
import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from fcdd.data.datasets import dataset_names, dataset_spec
from fcdd.errors import ConfigError

COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")  # train.compile: torch.compile modes
DATASETS = dataset_names()  # every module of fcdd/data/datasets/
RESIZE_MODES = ("fixed", "keep_aspect")  # data.resize; see fcdd/data/geometry.py


@dataclass
class FolderConfig:
    """A user's own data: directories or glob patterns (relative to ``data.root``)."""

    nominal: list[str] = field(default_factory=list)
    anomalous: list[str] = field(default_factory=list)
    masks: list[str] = field(default_factory=list)  # masks matched to images by file stem
    mask_suffix: str = ""  # e.g. "_mask": mask stem = image stem + suffix
    test_ratio: float = 0.2  # share of nominal images held out for testing (seeded split)
    mask_threshold: int = 127  # mask pixel > threshold -> anomalous


@dataclass
class DataConfig:
    dataset: str = "fmnist"  # one of DATASETS
    root: str = "data/fashion-mnist"  # raw data: a folder, or a zip for CIFAR-10 JPEG
    classes: list[str] = field(default_factory=list)  # empty: every class of the dataset
    cache_dir: str = "cache"  # resized images, normalisation statistics
    download: bool = False  # allow torchvision to download missing standard files
    num_workers: int = 2
    stored_size: int = 240  # MVTec/folder images are cached at this size (docs/method.md §4; short side)
    # MVTec/folder: fixed resizes every image to model.input_size (an int: square, [H, W]: rectangle);
    # keep_aspect takes model.input_size (an int) as the short side and the long side from the
    # training images' median aspect ratio.
    resize: str = "fixed"
    train_limit: int | None = None  # keep a seeded subset of N nominal training images
    test_limit: int | None = None  # keep a seeded, label-stratified subset of N test images
    # Fashion-MNIST, CIFAR-10, MVTec/folder: augment whole batches with tensor ops (same distributions)
    batch_augment: bool = True
    # Where the batch augmentation runs: "loader" (DataLoader workers, CPU), "device" (the training
    # device, e.g. the GPU, from uint8 batches), "auto" (device when training on CUDA).
    augment_on: str = "auto"
    strict: bool = False  # a non-image file in a folder is an error instead of a warning
    folder: FolderConfig = field(default_factory=FolderConfig)


@dataclass
class ModelConfig:
    net: str = "cnn28"  # cnn28 | cnn32 | vgg11_bn
    input_size: int | list[int] = 28  # square side, or [height, width]
    pretrained: bool = False  # ImageNet weights through torchvision's weights API
    weights_path: str | None = None  # or a local .pth state dict of torchvision's VGG11-BN
    freeze: int = 0  # freeze the first N modules of the VGG features (paper, MVTec: 15)
    sigma: float | None = None  # Gaussian σ of the upsampling; None: per dataset (docs/method.md §3)


@dataclass
class TrainConfig:
    epochs: int = 400
    batch_size: int = 128
    accumulate: int = 1  # gradient accumulation steps (MVTec: 16 x 8)
    optimizer: str = "sgd"  # sgd (Nesterov) | adam
    lr: float = 1e-2
    momentum: float = 0.9
    nesterov: bool = True
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    weight_decay: float = 1e-6
    scheduler: str = "lambda"  # lambda (lr * gamma^epoch) | milestones | none
    gamma: float = 0.98
    milestones: list[int] = field(default_factory=list)
    epoch_repeats: int = 1  # each epoch sees the training set this many times (MVTec: 10)
    loss: str = "auto"  # auto | image | pixel (auto: pixel when training anomalies carry masks)
    seeds: list[int] = field(default_factory=lambda: [0])
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    amp: bool = True  # bf16 autocast on CUDA, and on CPUs with native bf16 (AMX / AVX-512-BF16); else fp32
    channels_last: bool = True  # NHWC memory format: faster convolutions on CPU (oneDNN) and GPU
    # torch.compile of the training step (off | default | reduce-overhead | max-autotune; the last two
    # replay CUDA graphs): CUDA only, off until measured to win; see fcdd/compiled_step.py.
    compile: str = "off"
    threads: int | None = None  # torch CPU threads; None: torch's default
    output_dir: str = "runs"  # one folder per (dataset, class, seed)
    # Shared copy of every epoch's checkpoint (fsspec URI: /nfs/ckpt, s3://bucket/ckpt, ...), so a
    # run resumes on any worker; None: the run folder only.
    checkpoint_uri: str | None = None
    checkpoint_keep: int = 2  # newest shared checkpoints kept per run (older ones pruned)
    progress: bool = True  # tqdm bar per epoch, shown only when stderr is a terminal
    # After the last epoch, re-estimate BatchNorm running stats on nominal training images (or the
    # training stream: train); off keeps the training-time averages. See fcdd/batchnorm.py.
    bn_recalibration: str = "off"


@dataclass
class AnomalyConfig:
    kind: str = "oe"  # oe | confetti | semi | none
    probability: float = 0.5  # chance a training sample is replaced by an anomaly
    oe_source: str = "../shared/data/imagenet1k_samples"  # folder, zip, or cifar100:ROOT / emnist:ROOT
    oe_limit: int | None = None  # keep a fixed random subset of N OE images
    semi_k: int = 1  # real anomalies per defect type moved from test to train (kind=semi)
    confetti_gt: str = "ones"  # ones | changed: ground-truth map of a confetti anomaly


@dataclass
class EvaluationConfig:
    batch_size: int = 64
    quantile: float | None = None  # heatmap normalisation quantile; None: per dataset
    heatmap_count: int = 16  # images per heatmap grid
    aupro: bool = True  # per-region overlap, where masks exist
    aupro_max_fpr: float = 0.3
    threshold: float | None = None  # image-score threshold for good/defect labels in predict
    # Nominal training images held out for conformal calibration (fcdd/calibration.py), never trained
    # on: a fraction in (0, 1) (raised to 20 images where the data allows) or a count; 0/null: off.
    calibration: int | float | None = None


@dataclass
class TrackingConfig:
    enabled: bool = True
    uri: str = "sqlite:///mlruns.db"  # MLFLOW_TRACKING_URI in the environment wins
    artifact_location: str = "mlartifacts"
    experiment_prefix: str = "fcdd"
    register: bool = True
    onnx: bool = True  # registered versions also carry the ONNX export (needs the export extra)
    model_name: str = "fcdd-{dataset}-{cls}"


@dataclass
class OrchestrationConfig:
    mode: str = "local"  # local: subflows in-process | deployments: one deployment run per class
    work_pool: str = "gpu-pool"
    deployment: str = "fcdd-train-class/fcdd-train-class"
    retries: int = 2
    retry_delay_s: int = 10
    timeout_s: int = 86400
    concurrency_limit: str = "gpu"  # global concurrency limit name; one slot per GPU
    max_parallel: int = 1  # class runs in flight at once in local mode
    pack: int = 1  # (class, seed) runs trained together as one batched model per class run (GPU; fcdd.packed)


@dataclass
class Config:
    preset: list[str] = field(default_factory=list)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    anomalies: AnomalyConfig = field(default_factory=AnomalyConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    orchestration: OrchestrationConfig = field(default_factory=OrchestrationConfig)

    # Derived values: one place for the per-dataset rules of the spec.
    @property
    def sigma(self) -> float:
        """σ for the upsampling: configured, else per dataset (docs/method.md §3: otherwise 10)."""
        if self.model.sigma is not None:
            return self.model.sigma
        return dataset_spec(self.data.dataset).sigma

    @property
    def quantile(self) -> float:
        if self.evaluation.quantile is not None:
            return self.evaluation.quantile
        return dataset_spec(self.data.dataset).quantile

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def flat(self) -> dict[str, Any]:
        """``section.key`` -> value, for logging as run parameters."""
        out: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict):
                for k, v in value.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = value

        walk("", self.to_dict())
        return out


_FLOAT_TEXT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)[eE][-+]?\d+")


def _check_type(value: Any, hint: Any, where: str) -> Any:
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        errors = []
        for arg in typing.get_args(hint):
            if arg is type(None):
                if value is None:
                    return None
                continue
            try:
                return _check_type(value, arg, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(f"{where}: expected {_hint_name(hint)}, got {value!r}")
    if origin is list:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            value = [value]  # a single value where a list is expected: `classes: grid`
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item,) = typing.get_args(hint)
        return [_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is float:
        if isinstance(value, str) and _FLOAT_TEXT.fullmatch(value.strip()):
            return float(value)  # PyYAML reads `1e-4` (no dot) as a string
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)  # `classes: [0, 1]` and the like
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, where)
    raise ConfigError(f"{where}: unsupported type {hint}")  # pragma: no cover


def _hint_name(hint: Any) -> str:
    return str(hint).replace("typing.", "")


def _build(cls: type, values: Any, where: str) -> Any:
    if values is None:
        values = {}
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(
            f"unknown key {'.'.join(filter(None, [where, unknown[0]]))!s}; "
            f"known keys of {where or 'the top level'}: {', '.join(sorted(names))}"
        )
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}" if where else k) for k, v in values.items()}
    obj = cls()
    for k, v in kwargs.items():
        if dataclasses.is_dataclass(v):
            v = _merge_dataclass(getattr(obj, k), values[k], f"{where}.{k}" if where else k)
        setattr(obj, k, v)
    return obj


def _merge_dataclass(base: Any, values: dict, where: str) -> Any:
    merged = copy.deepcopy(base)
    hints = typing.get_type_hints(type(base))
    names = {f.name for f in dataclasses.fields(base)}
    for k, v in (values or {}).items():
        if k not in names:
            raise ConfigError(f"unknown key {where}.{k}; known keys of {where}: {', '.join(sorted(names))}")
        current = getattr(merged, k)
        if dataclasses.is_dataclass(current):
            setattr(merged, k, _merge_dataclass(current, v, f"{where}.{k}"))
        else:
            setattr(merged, k, _check_type(v, hints[k], f"{where}.{k}"))
    return merged


def _deep_update(base: dict, update: dict) -> dict:
    for k, v in update.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _deep_update(base[k], v)
        else:
            base[k] = copy.deepcopy(v)
    return base


def parse_override(text: str) -> tuple[list[str], Any]:
    """``train.epochs=3`` -> (["train", "epochs"], 3); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"override {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"override {text!r}: empty key")
    return path, yaml.safe_load(raw) if raw.strip() else None


def load_config(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | list[str] | None = None,
) -> Config:
    """Read params.yaml (if given), apply presets, then ``section.key=value`` overrides."""
    resolved: dict[str, Any] = {}
    chosen: list[str] = []
    for source, layer in config_layers(path, overrides, preset):
        if source.startswith("preset "):
            chosen.append(source.split(" ", 1)[1])
        _deep_update(resolved, layer)
    resolved["preset"] = chosen
    cfg = _build(Config, resolved, "")
    validate(cfg)
    return cfg


def config_layers(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | list[str] | None = None,
) -> list[tuple[str, dict[str, Any]]]:
    """The layers of a configuration, lowest first: ``("preset NAME", sections)`` per chosen preset,
    ``("PATH", sections)`` for the file, ``("override", sections)`` for the command line."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"{p}: no such configuration file")
        try:
            raw = yaml.safe_load(p.read_text()) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{p}: not valid YAML: {e}") from e
        if not isinstance(raw, dict):
            raise ConfigError(f"{p}: expected a mapping of sections")
    presets = raw.pop("presets", {}) or {}
    if not isinstance(presets, dict):
        raise ConfigError("presets: expected a mapping of preset name -> sections")

    given: dict[str, Any] = {}
    for o in overrides:
        keys, value = parse_override(o)
        node = given
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {o!r}: {k} is not a section")
        node[keys[-1]] = value

    explicit = _deep_update(copy.deepcopy(raw), given)
    chosen = preset if preset is not None else explicit.get("preset", [])
    chosen = [chosen] if isinstance(chosen, str) else list(chosen or [])
    layers: list[tuple[str, dict[str, Any]]] = []
    for name in chosen:
        if name not in presets:
            raise ConfigError(
                f"unknown preset {name!r}; known presets: {', '.join(sorted(presets)) or 'none'}"
                + ("" if presets else f" ({path or 'no file'} defines no `presets:` section)")
            )
        layers.append((f"preset {name}", copy.deepcopy(presets[name])))
    raw.pop("preset", None)
    given.pop("preset", None)
    layers.append((str(path) if path is not None else "file", raw))
    layers.append(("override", given))
    return layers


def explain_config(
    path: str | Path | None = "params.yaml",
    overrides: list[str] | tuple[str, ...] = (),
    preset: str | list[str] | None = None,
) -> list[tuple[str, Any, str]]:
    """(``section.key``, resolved value, where it came from) for every value of the configuration:
    ``default``, ``preset NAME``, ``PATH (section S)`` or ``override``."""
    cfg = load_config(path, overrides, preset)
    origin: dict[str, str] = {}
    for source, layer in config_layers(path, overrides, preset):
        for key in _flat_keys(Config, layer):
            section = key.split(".", 1)[0]
            where = source if source.startswith(("preset ", "override")) else f"{source} ({section})"
            beaten = origin.get(key, "")
            if beaten.startswith("preset ") and not where.startswith("preset "):
                where += f", over {beaten.split(',')[0]}"  # the trap of a copied params.yaml, made visible
            origin[key] = where
    rows = []
    for key, value in cfg.flat().items():
        where = "preset" if key == "preset" and cfg.preset else origin.get(key, "default")
        if key == "evaluation.quantile" and value is None:
            where += f"; null -> {cfg.quantile} for {cfg.data.dataset} (docs/method.md §3)"
        if key == "model.sigma" and value is None:
            where += f"; null -> {cfg.sigma} for {cfg.data.dataset} (docs/method.md §3)"
        rows.append((key, value, where))
    return rows


def _flat_keys(cls: type, values: dict[str, Any], prefix: str = "") -> list[str]:
    """``section.key`` names a layer sets; a whole section given as a mapping sets each of its keys."""
    hints = typing.get_type_hints(cls)
    keys = []
    for k, v in values.items():
        name = f"{prefix}{k}"
        hint = hints.get(k)
        if hint is not None and dataclasses.is_dataclass(hint) and isinstance(v, dict):
            keys += _flat_keys(hint, v, f"{name}.")
        else:
            keys.append(name)
    return keys


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express: every field of every section, at load time,
    so that no setting is found wrong after hours of training."""

    def one_of(where: str, value: str, choices: tuple[str, ...]) -> None:
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(choices)}")

    def check(where: str, ok: bool, rule: str, value: Any) -> None:
        if not ok:
            raise ConfigError(f"{where}: must be {rule}, got {value!r}")

    _check_finite(cfg, "")
    d, m, t, a, e, tr, o = (
        cfg.data,
        cfg.model,
        cfg.train,
        cfg.anomalies,
        cfg.evaluation,
        cfg.tracking,
        cfg.orchestration,
    )
    one_of("data.dataset", d.dataset, DATASETS)
    one_of("data.augment_on", d.augment_on, ("auto", "loader", "device"))
    one_of("model.net", m.net, ("cnn28", "cnn32", "vgg11_bn"))
    one_of("train.optimizer", t.optimizer, ("sgd", "adam"))
    one_of("train.scheduler", t.scheduler, ("lambda", "milestones", "none"))
    one_of("train.loss", t.loss, ("auto", "image", "pixel"))
    one_of("train.compile", t.compile, COMPILE_MODES)
    one_of("train.bn_recalibration", t.bn_recalibration, ("off", "nominal", "train"))
    one_of("anomalies.kind", a.kind, ("oe", "confetti", "semi", "none"))
    one_of("anomalies.confetti_gt", a.confetti_gt, ("ones", "changed"))
    one_of("orchestration.mode", o.mode, ("local", "deployments"))
    at_least = {
        1: {
            "train.epochs": t.epochs,
            "train.batch_size": t.batch_size,
            "train.accumulate": t.accumulate,
            "train.epoch_repeats": t.epoch_repeats,
            "data.stored_size": d.stored_size,
            "data.train_limit": d.train_limit,
            "data.test_limit": d.test_limit,
            "anomalies.oe_limit": a.oe_limit,
            "anomalies.semi_k": a.semi_k,
            "evaluation.batch_size": e.batch_size,
            "evaluation.heatmap_count": e.heatmap_count,
            "orchestration.timeout_s": o.timeout_s,
            "orchestration.max_parallel": o.max_parallel,
            "orchestration.pack": o.pack,
        },
        0: {
            "data.num_workers": d.num_workers,
            "train.threads": t.threads,
            "model.freeze": m.freeze,
            "orchestration.retries": o.retries,
            "orchestration.retry_delay_s": o.retry_delay_s,
        },
    }
    for low, values in at_least.items():
        for where, value in values.items():
            if value is not None and value < low:
                raise ConfigError(f"{where}: must be at least {low}, got {value}")
    _check_input_size(d, m)
    check("data.folder.test_ratio", 0.0 < d.folder.test_ratio < 1.0, "in (0, 1)", d.folder.test_ratio)
    mt = d.folder.mask_threshold
    check("data.folder.mask_threshold", 0 <= mt < 255, "in [0, 254] (mask pixel > threshold: anomalous)", mt)
    for where, value in {
        "data.root": d.root,
        "data.cache_dir": d.cache_dir,
        "train.output_dir": t.output_dir,
    }.items():
        check(where, bool(value.strip()), "a non-empty path", value)
    if a.kind == "oe":
        check(
            "anomalies.oe_source",
            bool(a.oe_source.strip()),
            "a folder, zip or cifar100:/emnist: root",
            a.oe_source,
        )
    check("model.sigma", m.sigma is None or m.sigma > 0, "positive (or null: per dataset)", m.sigma)

    check("train.lr", t.lr > 0, "positive", t.lr)
    check("train.momentum", t.momentum >= 0, "at least 0", t.momentum)
    check("train.weight_decay", t.weight_decay >= 0, "at least 0", t.weight_decay)
    check("train.gamma", t.gamma > 0, "positive", t.gamma)
    check("train.betas", len(t.betas) == 2, "two numbers [beta1, beta2]", t.betas)
    for i, beta in enumerate(t.betas):
        check(f"train.betas[{i}]", 0.0 <= beta < 1.0, "in [0, 1)", beta)
    for i, milestone in enumerate(t.milestones):
        check(f"train.milestones[{i}]", milestone >= 1, "an epoch number of at least 1", milestone)
    if not t.seeds:
        raise ConfigError("train.seeds: give at least one seed")
    for i, seed in enumerate(t.seeds):
        check(f"train.seeds[{i}]", 0 <= seed < 2**63 - 1, "in [0, 2^63 - 1)", seed)
    dup = sorted({s for s in t.seeds if t.seeds.count(s) > 1})
    check("train.seeds", not dup, f"distinct (repeated: {dup})", t.seeds)
    check("train.device", DEVICE_NAME.fullmatch(t.device) is not None, "auto, cpu, cuda or cuda:N", t.device)

    check("anomalies.probability", 0.0 <= a.probability <= 1.0, "in [0, 1]", a.probability)
    q = e.quantile
    check("evaluation.quantile", q is None or 0.0 < q <= 1.0, "in (0, 1] (or null: per dataset)", q)
    c = e.calibration
    check(
        "evaluation.calibration",
        c is None or (c >= 0 and (c < 1 or float(c).is_integer())),
        "a fraction in (0, 1), a whole number of images, or 0/null (off)",
        c,
    )
    check("evaluation.aupro_max_fpr", 0.0 < e.aupro_max_fpr <= 1.0, "in (0, 1]", e.aupro_max_fpr)

    for where, value in {
        "tracking.uri": tr.uri,
        "tracking.artifact_location": tr.artifact_location,
        "tracking.experiment_prefix": tr.experiment_prefix,
        "orchestration.work_pool": o.work_pool,
        "orchestration.concurrency_limit": o.concurrency_limit,
    }.items():
        check(where, bool(value.strip()), "non-empty", value)
    try:
        name = tr.model_name.format(dataset="d", cls="c")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"tracking.model_name: {tr.model_name!r} is not a name template with only {{dataset}} and {{cls}} ({err})"
        ) from None
    check("tracking.model_name", bool(name.strip()), "a non-empty name template", tr.model_name)
    flow, _, deployment = o.deployment.partition("/")
    check("orchestration.deployment", bool(flow and deployment), "FLOW_NAME/DEPLOYMENT_NAME", o.deployment)
    _check_checkpoint_store(t)


def _check_input_size(d: DataConfig, m: ModelConfig) -> None:
    """model.input_size: a positive int or [H, W]; data.resize keep_aspect needs the int short side."""
    if d.resize not in RESIZE_MODES:
        raise ConfigError(f"data.resize: {d.resize!r} is not one of {', '.join(RESIZE_MODES)}")
    size = m.input_size
    sides = size if isinstance(size, list) else [size, size]
    if len(sides) != 2 or min(sides) < 1:
        raise ConfigError(f"model.input_size: must be a positive integer or [height, width], got {size!r}")
    if d.resize == "keep_aspect" and isinstance(size, list):
        raise ConfigError(
            f"model.input_size: data.resize keep_aspect takes one integer (the short side), got {size!r}"
        )
    resized = [n for n in DATASETS if dataset_spec(n).any_size]  # images of any size
    if d.resize == "keep_aspect" and d.dataset not in resized:
        raise ConfigError(
            f"data.resize: keep_aspect applies to {' and '.join(resized)}; {d.dataset} has fixed inputs"
        )


def _check_checkpoint_store(t: TrainConfig) -> None:
    """A shared checkpoint folder fsspec cannot open fails now, not after the first epoch."""
    if t.checkpoint_keep < 1:
        raise ConfigError(f"train.checkpoint_keep: must be at least 1, got {t.checkpoint_keep}")
    if t.checkpoint_uri is None:
        return
    if not t.checkpoint_uri.strip():
        raise ConfigError("train.checkpoint_uri: must be a folder URI or null (run folder only), got ''")
    from fcdd.checkpoint_store import CheckpointStoreError, check_uri

    try:
        check_uri(t.checkpoint_uri)
    except CheckpointStoreError as err:
        raise ConfigError(str(err)) from None


DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


def _check_finite(node: Any, where: str) -> None:
    """No NaN or infinity anywhere (YAML reads `.nan` and `.inf` as numbers)."""
    if dataclasses.is_dataclass(node):
        for f in dataclasses.fields(node):
            _check_finite(getattr(node, f.name), f"{where}.{f.name}" if where else f.name)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _check_finite(v, f"{where}[{i}]")
    elif isinstance(node, float) and not math.isfinite(node):
        raise ConfigError(f"{where}: must be a finite number, got {node}")
