"""CPU feature detection: the line every benchmark prints, and the bf16 decision."""

from __future__ import annotations

from pathlib import Path

from fcdd.hardware import FLAGS, cpu_info, machine_line


def test_cpu_info_reads_this_machine():
    info = cpu_info()
    assert info.model and info.cores >= 1
    assert set(info.flags) <= set(FLAGS)
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        text = cpuinfo.read_text()
        model = next(
            line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("model name")
        )
        flags = set(
            next(line.split(":", 1)[1] for line in text.splitlines() if line.startswith("flags")).split()
        )
        assert info.model == model
        assert set(info.flags) == {f for f in FLAGS if f in flags}
        assert info.bf16 == bool({"avx512_bf16", "amx_bf16"} & flags)
    line = machine_line("cpu")
    assert info.model in line and info.torch_capability in line
