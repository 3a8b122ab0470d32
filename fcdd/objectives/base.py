"""The objective interface: what a net is trained to minimise and how a trained net scores images.

An objective is the pluggable part of the training recipe (fcdd/training/recipe.py). The training
loop (fcdd/training/loop.py) knows nothing of FCDD: per step it collates the batch keys the
objective asks for, runs the net on the images (under bf16 autocast where the runtime chose it) and
hands the raw output and the batch to ``loss``. The Detector (fcdd/detector.py) scores through
``score``. FCDD (fcdd/objectives/fcdd.py) is the implementation today; a new objective is one module
beside it, registered in ``fcdd.objectives.OBJECTIVES``, and the loop does not change.

Contract (``Objective``):

- ``name: str`` -- the registry key, which ``train.objective`` names (absent: ``"fcdd"``). A run
  with another objective records it in ``model.pt``'s meta ("objective"); a file without one is
  FCDD's, so everything written before objectives were pluggable keeps its bytes. Likewise the run
  fingerprint should count ``train.objective`` only away from "fcdd"
  (``fcdd.fingerprint.LATER_KEYS_AT_OLD_BEHAVIOUR``), so earlier checkpoints still resume.
- ``loss_kind: str`` -- recorded in ``checkpoint.pt`` ("loss_kind"); FCDD: "image" or "pixel".
- ``keys: tuple[str, ...]`` -- the batch keys the loss reads besides "image" (which every batch
  has): "label" (int64 [B], 0 nominal, 1 anomalous), "mask" (float [B, 1, H, W] in {0, 1}). The
  loader collates only these (copying masks an image-level loss ignores would cost time).
- ``loss(out, batch) -> Tensor`` -- a scalar: the loss of ONE net's raw output ``out`` (whatever
  the net returns: FCDD's φ(X) [B, 1, u, v], a feature vector, a reconstruction) on ``batch``, a
  dict of device tensors with "image" (the net's input) and ``keys``. An objective that trains on
  nominal images only (an autoencoder) masks by ``batch["label"]`` here.
- ``packed_loss(out, batch) -> Tensor[K]`` -- K nets trained as one (fcdd/training/packed.py):
  ``out`` and every batch value carry a leading K dimension; the default stacks ``loss`` per net,
  and an objective may override it to batch work across the nets.
- ``score(model, x) -> AnomalyScores`` -- test-time scores of a preprocessed batch ``x``:
  ``image`` [B], ``pixel`` (the heatmap) [B, 1, H, W] at the input size, ``amap`` the
  low-resolution map [B, 1, u, v] where the objective has one (FCDD's A), else None. The objective
  sets the gradient mode: FCDD scores under ``torch.no_grad``; an objective whose heatmap is an
  input gradient (HSC) enables gradients there (the Detector calls ``score`` outside any no_grad).
- ``to(device) -> self`` -- moves what the objective holds (FCDD: the upsampler's kernel).
- ``from_config(cfg, upsampler)`` -- the objective a run trains with (FCDD reads ``train.loss``);
  ``for_scoring(meta, upsampler)`` -- the one that scores with a saved model (``Detector.meta``).
  ``upsampler``: the receptive-field upsampler of the run's net (None where the net has none).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from fcdd.scoring import AnomalyScores


class Objective(ABC):
    name: ClassVar[str]
    loss_kind: str
    keys: tuple[str, ...]

    @abstractmethod
    def loss(self, out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The training loss (a scalar) of one net's raw output on a batch."""

    def packed_loss(self, out: torch.Tensor, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """K nets' losses [K] from outputs [K, B, ...] and batch values [K, B, ...]."""
        return torch.stack(
            [self.loss(out[k], {key: v[k] for key, v in batch.items()}) for k in range(out.shape[0])]
        )

    @abstractmethod
    def score(self, model: nn.Module, x: torch.Tensor) -> AnomalyScores:
        """Image scores, the heatmap at the input size and the low-resolution map (or None)."""

    def to(self, device: torch.device | str) -> Objective:
        return self

    @classmethod
    @abstractmethod
    def from_config(cls, cfg: Any, upsampler: nn.Module | None = None) -> Objective:
        """The objective a run with configuration ``cfg`` trains with."""

    @classmethod
    @abstractmethod
    def for_scoring(cls, meta: dict, upsampler: nn.Module | None = None) -> Objective:
        """The objective that scores with a saved model whose meta is ``meta``."""
