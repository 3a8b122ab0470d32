"""What a dataset is to the package: one class per dataset, carrying every fact about it, in the
spirit of torchvision (whose datasets carry their ``classes``).

Each module of fcdd/data/datasets/ subclasses :class:`DatasetSpec` and sets ``DATASET`` to an
instance; fcdd.data.datasets finds them by name. Everything else reads the facts from there: the
configuration (``data.dataset``'s choices, the σ and quantile a null setting stands for, which
datasets take ``data.resize``), ``fcdd init`` (the CPU preset), the training recipe (whether the
training data carry ground-truth maps), the training set (augmentation, outlier exposure) and the
loaders. docs/architecture.md ("Adding a dataset") walks through a new one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:
    from fcdd.data.augment import Augment
    from fcdd.data.training_set import RawData

# The facts every dataset states (no default): checked when the registry finds the module.
REQUIRED = ("name", "title", "sigma", "quantile", "augment")


class DatasetSpec:
    """One dataset. Subclasses set the class attributes below and implement :meth:`load`."""

    name: ClassVar[str]  # the value of data.dataset
    title: ClassVar[str]  # how messages name it ("Fashion-MNIST")
    # Path-safe class names in label order; None: the classes are found in the data (class_names).
    classes: ClassVar[tuple[str, ...] | None] = None
    sigma: ClassVar[float]  # Gaussian σ of the receptive-field upsampling (docs/method.md §3)
    quantile: ClassVar[float]  # heatmap normalisation quantile (docs/method.md §3)
    # The training data carry ground-truth maps (zeros for nominal images, the anomaly's map for
    # injected ones): train.loss auto is then the pixel-wise loss (docs/method.md §1).
    has_maps: ClassVar[bool] = False
    # Images of any size, resized to model.input_size (data.resize, data.stored_size apply).
    any_size: ClassVar[bool] = False
    # One class, its name given by data.classes (a user's folder): more than one name is an error.
    one_named_class: ClassVar[bool] = False
    cpu_preset: ClassVar[str | None] = None  # the reduced preset `fcdd init` adds on a machine without CUDA
    augment: ClassVar[Augment]  # the training augmentation (fcdd/data/augment.py)
    # Outlier exposure: names or WordNet ids of the test set's classes, never drawn as anomalies
    # (matched against an OE image's folders and file stem); with oe_reject_own, an OE source that
    # holds any of them is an error instead (a dataset cannot be its own outlier exposure).
    oe_exclude: ClassVar[tuple[str, ...]] = ()
    oe_reject_own: ClassVar[bool] = False

    def class_names(self, cfg: Any) -> list[str]:
        """The classes a run can take as its nominal class (path-safe names)."""
        if self.classes is None:
            raise NotImplementedError(f"{type(self).__name__}: set classes or override class_names")
        return list(self.classes)

    def load(self, cfg: Any, cls: str, seed: int) -> RawData:
        """The raw splits of class ``cls`` (fcdd.data.training_set.RawData); DataError naming the
        file or value on bad data. ``cfg`` is read, never written."""
        raise NotImplementedError(f"{type(self).__name__}.load")

    def train_transform(self, preprocess: dict[str, Any], stored_size: int | list[int] | None = None) -> Any:
        """Per-sample training augmentation ending in the test normalisation."""
        return self.augment.train_transform(preprocess, stored_size)

    def batch_transform(self, preprocess: dict[str, Any]) -> Any:
        """The same augmentation over whole batches (data.batch_augment), or None."""
        return self.augment.batch_transform(preprocess)

    def __repr__(self) -> str:
        return f"<dataset {self.name}: {self.title}>"
