"""The net the training loop trains: one model (``Single``), or K models packed as one (``PackedModel``).

A one-vs-rest protocol is many small runs, each of which leaves a GPU mostly idle: the cost of a
step is kernel launches and host work, not arithmetic. Packing stacks the K models' parameters
(``torch.func.stack_module_state``) and runs them with ``vmap(functional_call)``, so one launch
does the work of K (a batched convolution becomes one grouped convolution).

Each packed model keeps everything of its own: its data stream (its own seeded loader), its loss,
its optimiser state (SGD and Adam are elementwise, so one optimiser over the stacked parameters
equals K separate ones), its checkpoint in its own run folder in the format of a single run, and
its history. A packed run therefore equals K separate runs up to float rounding, and a packed
checkpoint resumes as a separate run and vice versa.

Both classes give the loop (fcdd/training/loop.py) the same few operations, so there is one loop.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from fcdd.objectives import Objective
from fcdd.training.runtime import to_memory_format

Batch = dict[str, torch.Tensor]


class Single:
    """One model: the loop's K = 1, on the model itself (no vmap)."""

    k = 1

    def __init__(self, model: nn.Module):
        self.model = model

    def place(self, device: torch.device, channels_last: bool) -> None:
        self.model.to(device)
        if channels_last:
            self.model.to(memory_format=torch.channels_last)

    def parameters(self) -> list[torch.Tensor]:
        return list(self.model.parameters())

    def step_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """What one step changes besides gradients (a failed compiled step restores them)."""
        return list(self.model.parameters()), list(self.model.buffers())

    def train(self) -> None:
        self.model.train()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)

    def inputs(
        self, batches: list[Mapping], keys: tuple[str, ...], device: torch.device, channels_last: bool
    ) -> tuple[torch.Tensor, Batch]:
        """The loader's batch on the device: the images (channels-last where set) and ``keys``."""
        (b,) = batches
        x = to_memory_format(b["image"].to(device, non_blocking=True), channels_last)
        return x, {"image": x, **{key: b[key].to(device, non_blocking=True) for key in keys}}

    def loss(self, objective: Objective, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        return objective.loss(out, batch)

    def epoch_losses(self, losses: list[torch.Tensor]) -> list[float]:
        return [torch.stack(losses).mean().item()]

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        return self.model.state_dict()

    def optimizer_state(self, state: dict, k: int) -> dict:
        return state

    def load(
        self, model_states: list[dict], optimizer: torch.optim.Optimizer, optimizer_states: list[dict]
    ) -> None:
        self.model.load_state_dict(model_states[0])
        optimizer.load_state_dict(optimizer_states[0])

    def finish(self) -> None:
        self.model.to(
            memory_format=torch.contiguous_format
        )  # scoring, export and saving see the usual layout
        self.model.eval()


class PackedModel:
    """The stacked parameters and buffers of K identical nets, and a forward over all of them.
    The models must sit on the training device already; ``finish`` copies the trained weights back."""

    def __init__(self, models: list[nn.Module]):
        if not models:
            raise ValueError("packed training needs at least one model")
        kinds = {type(m) for m in models}
        if len(kinds) != 1:
            raise ValueError(
                f"packed models must share one architecture, got {sorted(k.__name__ for k in kinds)}"
            )
        self.models, self.k = models, len(models)
        self.params, self.buffers = stack_module_state(models)
        # stack_module_state makes every stacked parameter trainable: keep frozen ones frozen.
        for name, p in models[0].named_parameters():
            self.params[name].requires_grad_(p.requires_grad)
        self.names = list(models[0].state_dict().keys())
        self.base = copy.deepcopy(models[0]).to("meta")  # structure and train/eval flags only
        self.shapes = [p.shape for p in self.trainable()]

        def one(params, buffers, x):
            return functional_call(self.base, (params, buffers), (x,))

        self._forward = vmap(one, in_dims=(0, 0, 0), randomness="different")

    def place(self, device: torch.device, channels_last: bool) -> None:
        """Nothing to move (built on the device); no channels-last form for [K, B, C, H, W] batches."""

    def trainable(self) -> list[torch.Tensor]:
        """In the order of ``model.parameters()``: an optimiser's state lines up with a single model's."""
        return [p for name, p in self.params.items() if p.requires_grad]

    def parameters(self) -> list[torch.Tensor]:
        return list(self.params.values())

    def step_tensors(self) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return list(self.params.values()), list(self.buffers.values())

    def train(self, mode: bool = True) -> None:
        self.base.train(mode)  # frozen BN layers stay in eval mode (FCDDNet.train)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x [K, B, C, H, W] -> raw outputs [K, B, 1, u, v]."""
        return self._forward(self.params, self.buffers, x)

    def inputs(
        self, batches: list[Mapping], keys: tuple[str, ...], device: torch.device, channels_last: bool
    ) -> tuple[torch.Tensor, Batch]:
        """The K loaders' batches stacked on the device: [K, B, ...] each."""
        x = torch.stack([b["image"] for b in batches]).to(device, non_blocking=True)
        stacked = {key: torch.stack([b[key] for b in batches]).to(device, non_blocking=True) for key in keys}
        return x, {"image": x, **stacked}

    def loss(self, objective: Objective, out: torch.Tensor, batch: Batch) -> torch.Tensor:
        return objective.packed_loss(out, batch)  # [K]; backward of their sum: K separate gradients

    def epoch_losses(self, losses: list[torch.Tensor]) -> list[float]:
        return torch.stack(losses).mean(0).tolist()

    def state_dict(self, k: int) -> dict[str, torch.Tensor]:
        """Model k's state dict, keys in the order of the original module's."""
        merged = {**self.params, **self.buffers}
        return {name: merged[name][k].detach().clone() for name in self.names}

    def load_state_dicts(self, states: list[dict[str, torch.Tensor]]) -> None:
        with torch.no_grad():
            for store in (self.params, self.buffers):
                for name, t in store.items():
                    t.copy_(torch.stack([s[name] for s in states]).to(t.device, t.dtype))

    def optimizer_state(self, state: dict, k: int) -> dict:
        """Model k's optimiser state dict from the packed one: per-parameter tensors of the stacked
        shape are cut; scalars (Adam's step) are shared."""
        out = {"param_groups": copy.deepcopy(state["param_groups"]), "state": {}}
        for i, per_param in state["state"].items():
            out["state"][i] = {
                key: (v[k].clone() if torch.is_tensor(v) and v.shape == self.shapes[i] else copy.deepcopy(v))
                for key, v in per_param.items()
            }
        return out

    def _optimizer_stack(self, states: list[dict]) -> dict:
        out = {"param_groups": copy.deepcopy(states[0]["param_groups"]), "state": {}}
        for i, per_param in states[0]["state"].items():
            shape = self.shapes[i]
            out["state"][i] = {
                key: (
                    torch.stack([s["state"][i][key] for s in states])
                    if torch.is_tensor(v) and (len(shape) > 0 and v.shape == shape[1:])
                    else copy.deepcopy(v)
                )
                for key, v in per_param.items()
            }
        return out

    def load(
        self, model_states: list[dict], optimizer: torch.optim.Optimizer, optimizer_states: list[dict]
    ) -> None:
        self.load_state_dicts(model_states)
        optimizer.load_state_dict(self._optimizer_stack(optimizer_states))

    def finish(self) -> None:
        for k, m in enumerate(self.models):
            m.load_state_dict(self.state_dict(k))
            m.eval()
