"""Which Outlier Exposure pool a run draws from (docs/method.md §4), decided here and nowhere else:
the DVC stage, the flows, a deployment on any worker and ``fcdd train`` all reach it through
``build_anomaly_source``, so they fall back the same way.

``anomalies.oe_source: auto`` (the default) takes a local ImageNet-1k sample pool (one image per
class, ``<wnid>_<name>.jpg``) at the first of LOCAL_POOLS that exists, relative to the working
folder; without one, CIFAR-100's training set (the paper's OE set for Fashion-MNIST), downloaded
into ``data/cifar100`` when missing. Any other value is used as given.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

AUTO = "auto"
LOCAL_POOLS = ("data/imagenet1k_samples", "../shared/data/imagenet1k_samples")
FALLBACK = "cifar100:data/cifar100"


@dataclass(frozen=True)
class OEChoice:
    source: str  # what OutlierExposure.from_source loads
    how: str  # how it was chosen, for the one line that says so ('' when given explicitly)
    download: bool  # whether a torchvision set may be downloaded


def choose_oe_source(configured: str, download: bool) -> OEChoice:
    """The pool ``anomalies.oe_source`` names; for ``auto`` the first local pool, else CIFAR-100."""
    if configured.strip() != AUTO:
        return OEChoice(configured, "", download)
    for pool in LOCAL_POOLS:
        if Path(pool).is_dir():
            return OEChoice(pool, "auto: the local ImageNet-1k sample pool", download)
    where = " or ".join(LOCAL_POOLS)
    return OEChoice(
        FALLBACK, f"auto: no ImageNet-1k sample pool at {where}; CIFAR-100, downloaded when missing", True
    )
