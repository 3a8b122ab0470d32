"""Two checkouts of fcdd side by side: is the new code as fast as the old? Ratios new/old, in ONE run.

    python benchmarks/bench_checkouts.py OLD NEW --rounds 5          # e.g. a worktree of the last release
    python benchmarks/bench_checkouts.py OLD NEW --modes step e2e --jsonl results.jsonl
    python benchmarks/bench_checkouts.py . . --quick                 # a smoke run: this checkout twice

Each round measures both checkouts, one process each (old, new; the next round new, old), every
mode in that process; the process imports the checkout's own fcdd (PYTHONPATH), its own
benchmarks/bench_train_overhead.py and bench_end_to_end.py and tests/unit/test_engine.py's toy data, so
the same harness times old and new code. Modes, one torch thread:

- ``step``: a training step through the loop against the bare step (bench_train_overhead: CNN28 at
  batch 128, VGG11-BN at 224 with 15 frozen modules at batch 4), plain fp32 and fast path;
- ``overhead``: a tiny net on 8-image batches, image and pixel loss: the loop's own host work;
- ``e2e``: Fashion-MNIST end to end (bench_end_to_end's previous and fast paths, 256 images, 3
  epochs, the first not counted; data.root of the checkout);
- ``packed``: two tiny nets trained as one packed model, 4 epochs.

Every figure is kept with the wall clock and the process's CPU time. On a shared machine compare
CPU time: other work stretches the wall clock of whichever checkout it meets. The bare step is the
same code in both checkouts: its ratio is the noise of the run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODES = ("step", "overhead", "e2e", "packed")


# ---------------------------------------------------------------- one checkout, in its own process
def measure_step(quick: bool) -> dict:
    import bench_train_overhead as b
    import torch

    cpu = torch.device("cpu")
    cases = [b.Case("cnn28", 28, 128, 2, 2), b.Case("vgg11_bn", 224, 4, 2, 2, freeze=15)]
    if quick:
        cases = [b.Case("cnn28", 28, 16, 2, 1)]
    return {
        f"{c.net}:{c.freeze}": {
            "bare": b.time_bare(c, cpu),  # [wall, cpu] s/step, the fastest epoch
            "plain": b.time_engine(c, cpu, fast=False),  # [wall, cpu, loop wall]
            "fast": b.time_engine(c, cpu, fast=True),
        }
        for c in cases
    }


class CpuMarks:
    """Process CPU time at the start and at every epoch's end (a training callback). Its own class,
    not fcdd.testing.benchmark's: an old checkout may not have that."""

    def __init__(self):
        self.marks = [time.process_time()]

    def on_epoch_end(self, epoch, logs):
        self.marks.append(time.process_time())

    def fastest_after_first(self) -> float:
        return min(b - a for a, b in zip(self.marks[1:], self.marks[2:], strict=False))


def measure_overhead(quick: bool) -> dict:
    import torch

    from fcdd.anomaly_map import ReceptiveFieldUpsampler

    try:  # the checkout's own toy data: tests/unit/ since the tests were grouped, tests/ before
        from tests.unit.test_engine import SquaresOnNoise, tiny_cfg, tiny_model
    except ImportError:
        from tests.test_engine import SquaresOnNoise, tiny_cfg, tiny_model

    try:
        from fcdd.training import train
    except ImportError:  # a checkout from before fcdd/training/
        from fcdd.engine import train
    images, batch = (160, 8) if quick else (800, 8)
    out = {}
    for name, kw in (("image", {}), ("pixel", {"loss": "pixel"})):
        cfg = tiny_cfg(epochs=3 if quick else 4, batch_size=batch, **kw)
        model = tiny_model()
        clock = CpuMarks()

        upsampler = ReceptiveFieldUpsampler.for_model(model, 1.2)
        with tempfile.TemporaryDirectory() as tmp:
            train(
                model,
                SquaresOnNoise(images),
                cfg,
                torch.device("cpu"),
                Path(tmp),
                upsampler=upsampler,
                callbacks=clock,
            )
        steps = images // batch
        out[name] = clock.fastest_after_first() / steps  # CPU s/step
    return out


def measure_e2e(quick: bool) -> dict:
    import bench_end_to_end as e
    import torch

    args = argparse.Namespace(quick=quick, workers=0, threads=1, epochs=3, params="params.yaml")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        e.CASES["fmnist"][2][1] = "data.train_limit=256"
        cls, cfgs = e.configs("fmnist", args, Path(tmp))
        for path in ("previous", "fast"):
            bundle = e.build_datasets(cfgs[path], cls, seed=0)
            start = time.process_time()
            rates = e.epoch_rates(cfgs[path], bundle, torch.device("cpu"), Path(tmp) / path)[1:]
            out[path] = {"images_per_s": statistics.median(rates), "cpu_s": time.process_time() - start}
    return out


def measure_packed(quick: bool) -> dict:
    import torch

    try:  # the checkout's own toy data: tests/unit/ since the tests were grouped, tests/ before
        from tests.unit.test_engine import SquaresOnNoise, tiny_cfg, tiny_model
    except ImportError:
        from tests.test_engine import SquaresOnNoise, tiny_cfg, tiny_model

    try:
        from fcdd.training import train_packed
    except ImportError:  # a checkout from before fcdd/training/
        from fcdd.packed import train_packed
    n = 320 if quick else 1280
    cfg = tiny_cfg(epochs=3 if quick else 4, batch_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        start = time.process_time()
        res = train_packed(
            [tiny_model(s) for s in (1, 2)], [SquaresOnNoise(n), SquaresOnNoise(n)], cfg, torch.device("cpu"),
            [Path(tmp) / "a", Path(tmp) / "b"], [1, 2],
        )  # fmt: skip
        return {
            "epoch_s": min(h["epoch_time_s"] for h in res[0]["history"][1:]),
            "cpu_s": time.process_time() - start,
        }


def measure(tree: str, modes: list[str], quick: bool) -> dict:
    """Every mode on the checkout ``tree``: this process runs in it, with it and its benchmarks/ on
    PYTHONPATH (run_rounds), so fcdd, the benchmark modules and tests/ are the checkout's own."""
    import torch

    torch.set_num_threads(1)
    import importlib.util

    for name in ("fcdd", "bench_train_overhead"):  # the checkout's own, not this one's
        here = Path(importlib.util.find_spec(name).origin).resolve()
        if not here.is_relative_to(Path(tree).resolve()):
            raise SystemExit(f"bench_checkouts: {name} comes from {here}, not from the checkout {tree}")
    runs = {
        "step": measure_step,
        "overhead": measure_overhead,
        "e2e": measure_e2e,
        "packed": measure_packed,
    }
    return {mode: runs[mode](quick) for mode in modes}


# ---------------------------------------------------------------- both checkouts, alternating
def run_rounds(
    old: Path, new: Path, modes: list[str], rounds: int, quick: bool, jsonl: Path | None
) -> list[dict]:
    rows = []
    for r in range(rounds):
        for name, tree in [("old", old), ("new", new)][:: 1 if r % 2 == 0 else -1]:
            path = os.pathsep.join([str(tree), str(tree / "benchmarks")])
            env = {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1"}
            # `python -c` in the checkout: its folder, not this script's, heads the import path
            argv = [str(Path(__file__).resolve()), "--measure", str(tree), "--modes", *modes]
            argv += ["--quick"] if quick else []
            run = f"import runpy, sys; sys.argv = {argv!r}; runpy.run_path(sys.argv[0], run_name='__main__')"
            cmd = [sys.executable, "-c", run]
            start = time.time()
            done = subprocess.run(cmd, env=env, cwd=tree, capture_output=True, text=True)
            if done.returncode:
                raise SystemExit(f"bench_checkouts: {name} checkout {tree} failed:\n{done.stderr[-3000:]}")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            for mode, res in result.items():
                row = {"round": r, "tree": name, "mode": mode, "result": res}
                row.update(wall_s=round(time.time() - start, 1), load1=os.getloadavg()[0])
                rows.append(row)
                if jsonl:
                    with jsonl.open("a") as f:
                        f.write(json.dumps(row) + "\n")
            print(f"round {r + 1}/{rounds}: {name} done ({time.time() - start:.0f} s)", flush=True)
    return rows


NETS = {"cnn28:0": "CNN28", "vgg11_bn:15": "VGG11-BN 224, 15 frozen"}


def _figures(modes: set[str], nets: list[str]) -> list[tuple[str, str, str, object]]:
    """(measure, clock, mode, value of a result) for every figure the table compares."""
    out = []
    for net in nets:
        name = NETS.get(net, net)
        for clock, i in (("CPU", 1), ("wall", 0)):
            bare = f"bare step, {name} (same code: the noise)"
            out.append((bare, clock, "step", lambda r, n=net, i=i: r[n]["bare"][i]))
        for path in ("plain", "fast"):
            out.append((f"training step, {name}, {path}", "CPU", "step", lambda r, n=net, p=path: r[n][p][1]))
            out.append(
                (f"training step, {name}, {path}", "wall", "step", lambda r, n=net, p=path: r[n][p][0])
            )
    for loss in ("image", "pixel"):
        out.append((f"loop overhead, tiny net, {loss} loss", "CPU", "overhead", lambda r, k=loss: r[k]))
    for path in ("previous", "fast"):
        out.append((f"end to end, Fashion-MNIST, {path}", "CPU", "e2e", lambda r, p=path: r[p]["cpu_s"]))
        out.append(
            (f"end to end, Fashion-MNIST, {path}", "wall", "e2e", lambda r, p=path: 1 / r[p]["images_per_s"])
        )
    out.append(("packed K=2, tiny nets", "CPU", "packed", lambda r: r["cpu_s"]))
    out.append(("packed K=2, tiny nets", "wall", "packed", lambda r: r["epoch_s"]))
    return [f for f in out if f[2] in modes]


def ratios(rows: list[dict]) -> list[tuple[str, str, list[float]]]:
    """(measure, clock, new/old of each round) for every figure both checkouts have: time ratios,
    so above 1 is slower."""
    by: dict[tuple[int, str], dict[str, dict]] = {}
    for row in rows:
        by.setdefault((row["round"], row["mode"]), {})[row["tree"]] = row["result"]
    nets = sorted(
        {n for (_, m), t in by.items() if m == "step" for n in t.get("new", {})}, key=list(NETS).index
    )
    out = []
    for label, clock, mode, get in _figures({m for _, m in by}, nets):
        vals = [
            get(t["new"]) / get(t["old"]) for (_, m), t in sorted(by.items()) if m == mode and len(t) == 2
        ]
        if vals:
            out.append((label, clock, vals))
    return out


def summary(rows: list[dict]) -> str:
    from fcdd.testing.benchmark import table

    found = ratios(rows)
    lines = [
        table(
            ["measure", "clock", "new/old (median)", "each round", "range"],
            [
                [
                    label,
                    clock,
                    f"{statistics.median(v):.3f}",
                    " ".join(f"{x:.2f}" for x in v),
                    f"{min(v):.2f}-{max(v):.2f}",
                ]
                for label, clock, v in found
            ],
        )  # fmt: skip
    ]
    lines.append("")  # a line right under a markdown table would read as one of its rows
    for clock in ("CPU", "wall"):
        noise = [
            abs(v - 1) for label, c, vals in found if label.startswith("bare") and c == clock for v in vals
        ]
        if noise:
            lines.append(
                f"noise, {clock} time: the bare step (the same code in both) is off 1.0 by "
                f"{statistics.median(noise):.3f} (median), {max(noise):.3f} at most;"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("old", nargs="?", help="the baseline checkout (a folder with fcdd/, tests/, benchmarks/)")
    p.add_argument("new", nargs="?", help="the checkout measured against it")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    p.add_argument("--jsonl", type=Path, help="also append every measurement to this file")
    p.add_argument("--quick", action="store_true", help="1 round, overhead and packed, small sizes")
    p.add_argument("--measure", help=argparse.SUPPRESS)  # one checkout, in its own process
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.modes, args.quick)))
        return 0
    if not args.old or not args.new:
        p.error("give the two checkouts: OLD NEW")
    for tree in (args.old, args.new):
        if not (Path(tree) / "fcdd").is_dir():
            p.error(f"{tree}: not an fcdd checkout (no fcdd/ folder)")
    if args.quick:
        args.rounds, args.modes = 1, ["overhead", "packed"]
    from fcdd.testing.benchmark import header

    old, new = Path(args.old).resolve(), Path(args.new).resolve()
    rows = run_rounds(old, new, args.modes, args.rounds, args.quick, args.jsonl)
    print(header("cpu", f"new {new} / old {old}: {args.rounds} alternating rounds, 1 torch thread"))
    print(f"load average at the end: {', '.join(f'{v:.1f}' for v in os.getloadavg())}")
    print(summary(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
