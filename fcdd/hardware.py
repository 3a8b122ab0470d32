"""What this machine can do: CPU model and the instruction sets the fast paths depend on.

Machines here differ (an AVX2-only AMD, a Xeon with AVX-512 and AMX were both seen), so every
benchmark prints this line, and code that wants bf16 on the CPU asks ``cpu_info().bf16``.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass

import torch

# /proc/cpuinfo flag names that matter for torch's CPU kernels.
FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16", "amx_tile", "amx_int8")


@dataclass(frozen=True)
class CPUInfo:
    model: str
    cores: int  # CPUs this process may run on
    flags: tuple[str, ...]  # the subset of FLAGS present
    torch_capability: str  # the kernels torch dispatches to: DEFAULT, AVX2, AVX512, ...

    @property
    def bf16(self) -> bool:
        """Native bf16 matmuls (AVX-512-BF16 or AMX): where bf16 autocast can pay off on a CPU."""
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags

    def line(self) -> str:
        flags = " ".join(self.flags) or "none of " + "/".join(FLAGS[:3])
        return (
            f"CPU: {self.model} · {self.cores} cores · flags: {flags} · torch kernels: {self.torch_capability}"
            f" · torch {torch.__version__}, {torch.get_num_threads()} threads"
        )


@functools.cache
def cpu_info() -> CPUInfo:
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                key, _, value = line.partition(":")
                key = key.strip()
                if key == "model name" and model in ("", platform.processor(), platform.machine()):
                    model = value.strip()
                elif key == "flags" and not flags:
                    flags = set(value.split())
    except OSError:  # not Linux: the platform's name only
        pass
    try:
        capability = torch.backends.cpu.get_cpu_capability()
    except Exception:  # older torch builds
        capability = "unknown"
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return CPUInfo(model, cores, tuple(f for f in FLAGS if f in flags), capability)


def machine_line(device: torch.device | str | None = None) -> str:
    """One line for benchmark tables: the CPU, and the GPU when the device is CUDA."""
    line = cpu_info().line()
    device = torch.device(device) if isinstance(device, str) else device
    if device is not None and device.type == "cuda":
        line += f"\nGPU: {torch.cuda.get_device_name(device)}"
    return line
