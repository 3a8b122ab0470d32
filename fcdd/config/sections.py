"""The sections of params.yaml: every key with its default, its rules and its role, declared once.

A key's role (fcdd/config/keys.py: Role) is its section's ``ROLE`` unless its ``setting`` names
another. Rules that involve several keys sit in the section's ``check(cfg)``, below its fields.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from fcdd.config.keys import (
    Role,
    at_least,
    each,
    must,
    non_empty,
    non_empty_path,
    one_of,
    positive,
    section,
    setting,
    validate_fields,
)
from fcdd.config.registry import RegistryConfig
from fcdd.data.anomaly_kinds import check_anomaly_kind
from fcdd.data.datasets import dataset_names, dataset_spec
from fcdd.errors import ConfigError, shown
from fcdd.image_scores import IMAGE_SCORES
from fcdd.paths import file_in_the_way

RESULT, RUNTIME, EVALUATION, SERVICE = Role.RESULT, Role.RUNTIME, Role.EVALUATION, Role.SERVICE
COMPILE_MODES = ("off", "default", "reduce-overhead", "max-autotune")  # train.compile: torch.compile modes
DATASETS = dataset_names()  # every module of fcdd/data/datasets/
RESIZE_MODES = ("fixed", "keep_aspect")  # data.resize; see fcdd/data/geometry.py
OBJECTIVES = ("fcdd", "hsc", "ae")  # train.objective: FCDD and its baselines (docs/baselines.md)
DEVICE_NAME = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


@dataclass
class FolderConfig:
    """A user's own data: directories or glob patterns (relative to ``data.root``)."""

    ROLE: ClassVar[Role] = RESULT

    nominal: list[str] = setting([])
    anomalous: list[str] = setting([])
    masks: list[str] = setting([])  # masks matched to images by file stem
    mask_suffix: str = setting("")  # e.g. "_mask": mask stem = image stem + suffix
    # share of nominal images held out for testing (seeded split)
    test_ratio: float = setting(0.2, must(lambda v: 0.0 < v < 1.0, "in (0, 1)"))
    # mask pixel > threshold -> anomalous
    mask_threshold: int = setting(
        127, must(lambda v: 0 <= v < 255, "in [0, 254] (mask pixel > threshold: anomalous)")
    )


def _known_dataset(where: str, value: str) -> None:
    one_of(*dataset_names())(where, value)


@dataclass
class DataConfig:
    ROLE: ClassVar[Role] = RESULT

    dataset: str = setting("fmnist", _known_dataset)  # a module of fcdd/data/datasets/
    # raw data: a folder, or a zip for CIFAR-10 JPEG
    root: str = setting("data/fashion-mnist", non_empty_path)
    classes: list[str] = setting([])  # empty: every class of the dataset
    # resized images, normalisation statistics: where copies are kept, not what they hold
    cache_dir: str = setting("cache", non_empty_path, role=RUNTIME)
    download: bool = setting(False, role=RUNTIME)  # allow torchvision to download missing standard files
    # batches are seeded per batch: results do not depend on the number of workers
    num_workers: int = setting(2, at_least(0), role=RUNTIME)
    # MVTec/folder images are cached at this size (docs/method.md §4; short side)
    stored_size: int = setting(240, at_least(1))
    # MVTec/folder: fixed resizes every image to model.input_size (an int: square, [H, W]: rectangle);
    # keep_aspect takes model.input_size (an int) as the short side and the long side from the
    # training images' median aspect ratio.
    resize: str = setting("fixed", one_of(*RESIZE_MODES))
    train_limit: int | None = setting(None, at_least(1))  # keep a seeded subset of N nominal training images
    # keep a seeded, label-stratified subset of N test images
    test_limit: int | None = setting(None, at_least(1))
    # Fashion-MNIST, CIFAR-10, MVTec/folder: augment whole batches with tensor ops (same distributions)
    batch_augment: bool = setting(True)
    # Where the batch augmentation runs: "loader" (DataLoader workers, CPU), "device" (the training
    # device, e.g. the GPU, from uint8 batches), "auto" (device when training on CUDA).
    augment_on: str = setting("auto", one_of("auto", "loader", "device"))
    # a non-image file in a folder is an error instead of a warning
    strict: bool = setting(False, role=RUNTIME)
    folder: FolderConfig = section(FolderConfig)

    def check(self, cfg: Config) -> None:
        """A dataset of one class named by data.classes takes at most one name; data.resize
        keep_aspect: model.input_size is one integer, and the dataset takes any size."""
        if len(self.classes) > 1 and dataset_spec(self.dataset).one_named_class:
            raise ConfigError(
                f"data.classes: a {self.dataset} dataset has one class (data.classes names it), "
                f"got {len(self.classes)} names {shown(self.classes)}"
            )
        if self.resize != "keep_aspect":
            return
        if isinstance(cfg.model.input_size, list):
            raise ConfigError(
                "model.input_size: data.resize keep_aspect takes one integer (the short side), "
                f"got {shown(cfg.model.input_size)}"
            )
        resized = [n for n in dataset_names() if dataset_spec(n).any_size]  # images of any size
        if self.dataset not in resized:
            raise ConfigError(
                f"data.resize: keep_aspect applies to {' and '.join(resized)}; {self.dataset} has fixed inputs"
            )


def _input_size(where: str, size: Any) -> None:
    sides = size if isinstance(size, list) else [size, size]
    if len(sides) != 2 or min(sides) < 1:
        raise ConfigError(f"{where}: must be a positive integer or [height, width], got {shown(size)}")


@dataclass
class ModelConfig:
    ROLE: ClassVar[Role] = RESULT

    net: str = setting("cnn28", one_of("cnn28", "cnn32", "vgg11_bn"))
    input_size: int | list[int] = setting(28, _input_size)  # square side, or [height, width]
    pretrained: bool = setting(False)  # ImageNet weights through torchvision's weights API
    weights_path: str | None = setting(None)  # or a local .pth state dict of torchvision's VGG11-BN
    freeze: int = setting(0, at_least(0))  # freeze the first N modules of the VGG features (paper, MVTec: 15)
    # Gaussian σ of the upsampling; None: per dataset (docs/method.md §3)
    sigma: float | None = setting(None, must(lambda v: v > 0, "positive (or null: per dataset)"))
    # The image score (docs/method.md §1): "mean" of the anomaly map (the paper's) or "max" of the
    # heatmap (the random-init presets: a small defect moves the mean little); stored in model.pt.
    image_score: str = setting("mean", one_of(*IMAGE_SCORES))


def _seeds(where: str, seeds: list[int]) -> None:
    if not seeds:
        raise ConfigError(f"{where}: give at least one seed")
    each(must(lambda s: 0 <= s < 2**63 - 1, "in [0, 2^63 - 1)"))(where, seeds)
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    must(lambda _: not dup, f"distinct (repeated: {dup})")(where, seeds)


def _checkpoint_uri(where: str, uri: str) -> None:
    """A shared checkpoint folder fsspec cannot open fails now, not after the first epoch."""
    must(lambda v: bool(v.strip()), "a folder URI or null (run folder only)")(where, uri)
    import fsspec  # only runs with a shared checkpoint folder need it

    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as e:
        raise ConfigError(f"{where} {shown(uri)}: no usable filesystem ({e})") from None
    blocker = file_in_the_way(path) if "file" in _protocols(fs) else None
    if blocker is not None:
        raise ConfigError(
            f"{where} {uri}: {blocker} is a file, not a folder (checkpoints cannot go under it)"
        )


def _protocols(fs: Any) -> tuple[str, ...]:
    protocol = fs.protocol
    return (protocol,) if isinstance(protocol, str) else tuple(protocol)


@dataclass
class TrainConfig:
    ROLE: ClassVar[Role] = RESULT

    # raising it continues a run (the learning-rate schedules do not depend on it); a checkpoint
    # holding more epochs than asked is refused separately
    epochs: int = setting(400, at_least(1), role=RUNTIME)
    batch_size: int = setting(128, at_least(1))
    accumulate: int = setting(1, at_least(1))  # gradient accumulation steps (MVTec: 16 x 8)
    optimizer: str = setting("sgd", one_of("sgd", "adam"))  # sgd (Nesterov) | adam
    lr: float = setting(1e-2, positive)
    momentum: float = setting(0.9, must(lambda v: v >= 0, "at least 0"))
    nesterov: bool = setting(True)
    betas: list[float] = setting(
        [0.9, 0.999],
        must(lambda v: len(v) == 2, "two numbers [beta1, beta2]"),
        each(must(lambda b: 0.0 <= b < 1.0, "in [0, 1)")),
    )
    weight_decay: float = setting(1e-6, must(lambda v: v >= 0, "at least 0"))
    # lambda (lr * gamma^epoch) | milestones | none
    scheduler: str = setting("lambda", one_of("lambda", "milestones", "none"))
    gamma: float = setting(0.98, positive)
    milestones: list[int] = setting([], each(must(lambda m: m >= 1, "an epoch number of at least 1")))
    # each epoch sees the training set this many times (MVTec: 10)
    epoch_repeats: int = setting(1, at_least(1))
    # auto | image | pixel (auto: pixel when training anomalies carry masks)
    loss: str = setting("auto", one_of("auto", "image", "pixel"))
    # fcdd | hsc (hypersphere classifier, gradient heatmaps) | ae (autoencoder): docs/baselines.md
    objective: str = setting("fcdd", one_of(*OBJECTIVES))
    seeds: list[int] = setting([0], _seeds)
    # auto | cpu | cuda | cuda:N; a run may resume on another machine
    device: str = setting("auto", must(DEVICE_NAME.fullmatch, "auto, cpu, cuda or cuda:N"), role=RUNTIME)
    # bf16 autocast on CUDA, and on CPUs with native bf16 (AMX / AVX-512-BF16); else fp32
    amp: bool = setting(True)
    # NHWC memory format: faster convolutions on CPU (oneDNN) and GPU; memory layout only
    channels_last: bool = setting(True, role=RUNTIME)
    # torch.compile of the training step (off | default | reduce-overhead | max-autotune; the last two
    # replay CUDA graphs): CUDA only, off until measured to win; see fcdd/compiled_step.py. The same
    # step, compiled: equal up to float rounding.
    compile: str = setting("off", one_of(*COMPILE_MODES), role=RUNTIME)
    threads: int | None = setting(None, at_least(0), role=RUNTIME)  # torch CPU threads; None: torch's default
    output_dir: str = setting("runs", non_empty_path, role=RUNTIME)  # one folder per (dataset, class, seed)
    # Shared copy of every epoch's checkpoint (fsspec URI: /nfs/ckpt, s3://bucket/ckpt, ...), so a
    # run resumes on any worker; None: the run folder only. Where copies go, not what they hold.
    checkpoint_uri: str | None = setting(None, _checkpoint_uri, role=RUNTIME)
    # newest shared checkpoints kept per run (older ones pruned)
    checkpoint_keep: int = setting(2, at_least(1), role=RUNTIME)
    # tqdm bar per epoch, shown only when stderr is a terminal
    progress: bool = setting(True, role=RUNTIME)
    # After the last epoch, re-estimate BatchNorm running stats on nominal training images (or the
    # training stream: train); off keeps the training-time averages. See fcdd/batchnorm.py. Applied to
    # the final weights after the loop, so checkpoints (which the fingerprint guards) do not depend on it.
    bn_recalibration: str = setting("off", one_of("off", "nominal", "train"), role=RUNTIME)

    def check(self, cfg: Config) -> None:
        """The combinations a baseline objective cannot train (docs/baselines.md §5), before any work."""
        a, m = cfg.anomalies, cfg.model
        if self.objective == "fcdd":
            return
        if self.objective == "ae" and a.kind == "semi":
            raise ConfigError(
                "train.objective ae trains on nominal images only; anomalies.kind semi would move real "
                "defects out of the test set for nothing: use anomalies.kind none (or oe/confetti, not drawn for ae)"
            )
        allowed = ("auto", "image") if self.objective == "hsc" else ("auto",)
        if self.loss not in allowed:
            raise ConfigError(
                f"train.loss {self.loss!r} is FCDD's choice of loss; train.objective {self.objective} takes "
                f"{' or '.join(allowed)}"
            )
        if cfg.orchestration.pack > 1:
            raise ConfigError(
                f"orchestration.pack {cfg.orchestration.pack}: packed training is for FCDD nets; "
                f"train.objective {self.objective} trains one run at a time (set orchestration.pack: 1)"
            )
        native = {"cnn28": 28, "cnn32": 32}.get(m.net)
        if self.objective == "ae" and native is not None:
            size = m.input_size if isinstance(m.input_size, list) else [m.input_size] * 2
            keep = cfg.data.resize == "keep_aspect"
            if size != [native, native] or keep:
                raise ConfigError(
                    f"train.objective ae with model.net {m.net} reconstructs {native}x{native} images; "
                    f"model.input_size is {m.input_size!r}{' with data.resize keep_aspect' if keep else ''} "
                    f"(use {native}, or model.net vgg11_bn for other sizes)"
                )


@dataclass
class AnomalyConfig:
    ROLE: ClassVar[Role] = RESULT

    # oe | confetti | perlin | cutpaste | scar | semi | none, or a mix {perlin: 0.5, cutpaste: 0.25, scar: 0.25}
    # of confetti/perlin/cutpaste/scar whose shares sum to 1 (docs/synthetic-anomalies.md); a later
    # layer replaces a mix whole (fcdd/config/loading.py: ATOMIC_MAPPINGS)
    kind: str | dict[str, float] = setting("oe", check_anomaly_kind)
    # chance a training sample is replaced by an anomaly
    probability: float = setting(0.5, must(lambda v: 0.0 <= v <= 1.0, "in [0, 1]"))
    oe_source: str = setting("auto")  # folder, zip, cifar100:/emnist:ROOT, or auto (fcdd/data/oe_pool.py)
    oe_limit: int | None = setting(None, at_least(1))  # keep a fixed random subset of N OE images
    # real anomalies per defect type moved from test to train (kind=semi)
    semi_k: int = setting(1, at_least(1))
    # ones | changed: ground-truth map of a confetti anomaly
    confetti_gt: str = setting("ones", one_of("ones", "changed"))

    def check(self, cfg: Config) -> None:
        if self.kind == "oe":
            must(lambda v: bool(v.strip()), "a folder, zip or cifar100:/emnist: root")(
                "anomalies.oe_source", self.oe_source
            )


@dataclass
class EvaluationConfig:
    ROLE: ClassVar[Role] = EVALUATION

    batch_size: int = setting(64, at_least(1))
    # heatmap normalisation quantile; None: per dataset
    quantile: float | None = setting(None, must(lambda q: 0.0 < q <= 1.0, "in (0, 1] (or null: per dataset)"))
    heatmap_count: int = setting(16, at_least(1))  # images per heatmap grid
    # HSC/AE heatmaps in figures and predict overlays blurred over the FCDD twin's receptive field
    # (display only: metrics use the raw maps; docs/baselines.md §4)
    blur_heatmaps: bool = setting(False)
    aupro: bool = setting(True)  # per-region overlap, where masks exist
    aupro_max_fpr: float = setting(0.3, must(lambda v: 0.0 < v <= 1.0, "in (0, 1]"))
    threshold: float | None = setting(None)  # image-score threshold for good/defect labels in predict
    # Nominal training images held out for conformal calibration (fcdd/data/calibration_split.py),
    # never trained on: a fraction in (0, 1) (raised to 20 images where the data allows) or a count;
    # 0/null: off. It changes which images a run trains on: a result key.
    calibration: int | float | None = setting(
        None,
        must(
            lambda c: c >= 0 and (c < 1 or float(c).is_integer()),
            "a fraction in (0, 1), a whole number of images, or 0/null (off)",
        ),
        role=RESULT,
    )


def _model_name(where: str, template: str) -> None:
    try:
        name = template.format(dataset="d", cls="c", objective="o")
    except (KeyError, IndexError, ValueError) as err:
        raise ConfigError(
            f"{where}: {shown(template)} is not a name template with only {{dataset}}, {{cls}} and {{objective}} ({err})"
        ) from None
    must(lambda _: bool(name.strip()), "a non-empty name template")(where, template)


@dataclass
class TrackingConfig:
    ROLE: ClassVar[Role] = SERVICE

    enabled: bool = setting(True)
    uri: str = setting("sqlite:///mlruns.db", non_empty)  # MLFLOW_TRACKING_URI in the environment wins
    artifact_location: str = setting("mlartifacts", non_empty)
    experiment_prefix: str = setting("fcdd", non_empty)
    register: bool = setting(True)
    onnx: bool = setting(True)  # registered versions also carry the ONNX export (needs the export extra)
    model_name: str = setting("fcdd-{dataset}-{cls}", _model_name)


@dataclass
class OrchestrationConfig:
    ROLE: ClassVar[Role] = SERVICE

    # local: subflows in-process | deployments: one deployment run per class
    mode: str = setting("local", one_of("local", "deployments"))
    work_pool: str = setting("gpu-pool", non_empty)
    deployment: str = setting(
        "fcdd-train-class/fcdd-train-class",
        must(lambda v: all(v.partition("/")[::2]), "FLOW_NAME/DEPLOYMENT_NAME"),
    )
    retries: int = setting(2, at_least(0))
    retry_delay_s: int = setting(10, at_least(0))
    timeout_s: int = setting(86400, at_least(1))
    concurrency_limit: str = setting("gpu", non_empty)  # global concurrency limit name; one slot per GPU
    max_parallel: int = setting(1, at_least(1))  # class runs in flight at once in local mode
    # (class, seed) runs trained together as one batched model per class run (GPU; fcdd.packed)
    pack: int = setting(1, at_least(1))


@dataclass
class Config:
    # the presets applied (their values are in the keys they set): a record, not a setting
    preset: list[str] = setting([], role=RUNTIME)
    data: DataConfig = section(DataConfig)
    model: ModelConfig = section(ModelConfig)
    train: TrainConfig = section(TrainConfig)
    anomalies: AnomalyConfig = section(AnomalyConfig)
    evaluation: EvaluationConfig = section(EvaluationConfig)
    tracking: TrackingConfig = section(TrackingConfig)
    registry: RegistryConfig = section(RegistryConfig)
    orchestration: OrchestrationConfig = section(OrchestrationConfig)

    # Derived values: the dataset's own where a setting is null (fcdd/data/datasets/).
    @property
    def sigma(self) -> float:
        """σ for the upsampling: configured, else the dataset's (docs/method.md §3)."""
        if self.model.sigma is not None:
            return self.model.sigma
        return dataset_spec(self.data.dataset).sigma

    @property
    def quantile(self) -> float:
        """Heatmap normalisation quantile: configured, else the dataset's (docs/method.md §3)."""
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


def validate(cfg: Config) -> None:
    """Value checks that types alone cannot express, for every key, when a configuration loads:
    each key's own rules (fcdd/config/keys.py), then each section's rules over several keys."""
    validate_fields(cfg)
    for f in dataclasses.fields(cfg):
        check = getattr(getattr(cfg, f.name), "check", None)
        if check is not None:
            check(cfg)
