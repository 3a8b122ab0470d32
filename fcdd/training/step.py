"""The training step (forward, loss, backward), optionally through ``torch.compile`` (``train.compile``).

A small net's step on a GPU is about a hundred kernel launches and the host work between them, not
arithmetic (CNN28's training step took 1.85x the bare step on an H200). ``torch.compile``
fuses forward, loss and backward into few kernels; its ``reduce-overhead`` and ``max-autotune``
modes also replay them as CUDA graphs (one launch per graph). Off by default: no GPU run has
measured a win yet (``benchmarks/gpu_suite.sh`` measures on against off).

CUDA only: on the CPU, compiling lost to eager bf16 + channels-last (docs/benchmarks.md) and takes
minutes on a small machine, so a CPU run trains eager and says so in one line. A step that fails to
compile (no Triton, an operation inductor cannot take) is undone, weights, buffers and gradients as
before it, and the run goes on eager with one line naming the error: it then equals an eager run.
Nothing in the step waits for the GPU (the loss comes back as a device tensor).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

import torch

from fcdd.config import COMPILE_MODES

__all__ = ["COMPILE_MODES", "TrainStep", "compile_unsupported"]
_CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")  # torch.compile modes that replay CUDA graphs


def compile_unsupported(mode: str, device: torch.device) -> str | None:
    """Why ``train.compile=mode`` cannot be used on ``device``, or None when it can."""
    if mode == "off":
        return None
    if device.type != "cuda":
        return f"CUDA only, and this run trains on {device.type} (eager bf16 + channels-last won there)"
    if not torch._dynamo.is_dynamo_supported():
        return f"torch.compile is not supported with Python {sys.version.split()[0]} and torch {torch.__version__}"
    try:
        import triton  # noqa: F401 - inductor's GPU kernels need it
    except ImportError:
        return "Triton is not installed (inductor's GPU kernels need it)"
    return None


def _shapes(x: torch.Tensor, batch: Mapping[str, torch.Tensor] | torch.Tensor) -> tuple:
    if isinstance(batch, torch.Tensor):
        return (tuple(x.shape), tuple(batch.shape))
    return (tuple(x.shape), *((key, tuple(v.shape)) for key, v in batch.items()))


class TrainStep:
    """``step(x, batch, scale)``: ``loss = forward_loss(x, batch)``, ``(loss.sum() / scale).backward()``,
    returns the loss detached (a device tensor: a scalar, or one value per packed model). ``batch``:
    the tensors the loss reads (a dict, or one tensor). ``params`` and ``buffers`` are what one step
    changes (besides gradients): saved before the first compiled step of each input shape, restored
    if it fails."""

    def __init__(
        self,
        forward_loss: Callable[[torch.Tensor, Any], torch.Tensor],
        mode: str,
        device: torch.device,
        params: list[torch.Tensor],
        buffers: list[torch.Tensor],
        say: Callable[[str], None],
    ):
        self.forward_loss, self.mode, self.params, self.buffers, self.say = (
            forward_loss, mode, params, buffers, say,
        )  # fmt: skip
        self.compiled: Callable | None = None
        self._proven: set[tuple] = set()  # input shapes that ran compiled
        why = compile_unsupported(mode, device)
        if why is not None:
            say(f"train.compile={mode}: {why}; training eager")
        elif mode != "off":
            # dynamic=False: one static graph per input shape (the full batch and an epoch's last).
            self.compiled = torch.compile(forward_loss, mode=mode, dynamic=False)

    @property
    def active(self) -> bool:
        """Whether steps run compiled (False: eager, by setting or after a fallback)."""
        return self.compiled is not None

    def __call__(self, x: torch.Tensor, target: Any, scale: int) -> torch.Tensor:
        if self.compiled is None:
            return self._run(self.forward_loss, x, target, scale)
        shapes = _shapes(x, target)
        if shapes in self._proven:
            return self._run(self.compiled, x, target, scale)
        saved = self._save()
        try:
            loss = self._run(self.compiled, x, target, scale)
        except Exception as e:  # noqa: BLE001 - any compile failure: undo the step and go on eager
            self._restore(saved)
            self.compiled = None
            first = (str(e).strip().splitlines() or [""])[0][:200]
            self.say(
                f"train.compile={self.mode}: compiling the step failed ({type(e).__name__}: {first}); training eager"
            )
            return self._run(self.forward_loss, x, target, scale)
        self._proven.add(shapes)
        return loss

    def _run(self, fn: Callable, x: torch.Tensor, target: Any, scale: int) -> torch.Tensor:
        graphs = fn is self.compiled and self.mode in _CUDA_GRAPH_MODES
        if graphs:
            torch.compiler.cudagraph_mark_step_begin()  # a new training iteration: earlier outputs are done with
        loss = fn(x, target)
        (loss.sum() / scale).backward()  # .sum(): a packed step's loss holds one value per model
        # A CUDA graph's output lives in memory the next replay overwrites: keep a copy.
        return loss.detach().clone() if graphs else loss.detach()

    def _save(self) -> tuple[list[torch.Tensor], list[torch.Tensor | None]]:
        with torch.no_grad():
            values = [t.detach().clone() for t in [*self.params, *self.buffers]]
            grads = [None if p.grad is None else p.grad.detach().clone() for p in self.params]
        return values, grads

    def _restore(self, saved: tuple[list[torch.Tensor], list[torch.Tensor | None]]) -> None:
        values, grads = saved
        with torch.no_grad():
            for t, v in zip([*self.params, *self.buffers], values, strict=True):
                t.copy_(v)
        for p, g in zip(self.params, grads, strict=True):
            p.grad = g
