"""FCDD vs its baselines (HSC, AE) under one protocol: the comparison stage on a benchmark profile.

Writes a params file for the profile into ``--out`` (the presets of the repository's params.yaml,
never its main-job sections), runs ``python -m pipelines.stages.compare`` there (the Prefect train
flow per objective, tracking off) and writes ``results.md``: machine, date, commit, command, the
stage's table and figure. Every run folder stays in ``--out/runs/<objective>/`` with its
metrics.json, so an interrupted benchmark keeps what it finished (a rerun evaluates finished runs
instead of training them again). Run from the repository root.

    python benchmarks/bench_objectives.py fmnist --seeds 0 1 2 --out /tmp/objbench/fmnist
    python benchmarks/bench_objectives.py mvtec-grid --seeds 0 1 2 --out /tmp/objbench/grid

Long benchmarks can run a seed at a time (``--seeds 0 --out DIR-s0``, ``--seeds 1 --out DIR-s1``,
...), every objective finished for one seed before the next starts; ``--from-runs DIR-s0 DIR-s1 ...``
then tabulates all their run folders in one table (the figure from each class's first-seed models,
whichever folder holds them).
"""

from __future__ import annotations

import argparse
import datetime
import os
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
# The CPU profiles of docs/benchmarks.md: the paper's presets reduced for a 2-core CPU, the same
# for every objective. CIFAR-10's limits are bench_quality.py's CPU_LIMITS.
PROFILES = {
    "fmnist": {
        "preset": ["fmnist", "cpu"],
        "data": {"dataset": "fmnist", "root": str(ROOT / "data" / "fashion-mnist")},
        "anomalies": {"oe_source": str(SHARED / "imagenet1k_samples")},
    },
    "cifar10": {
        "preset": ["cifar10", "cpu"],
        "data": {
            "dataset": "cifar10",
            "root": str(SHARED / "cifar10_jpeg.zip"),
            "train_limit": 2000,
            "test_limit": 2000,
        },
        "train": {"epochs": 4},
        "anomalies": {"oe_source": str(SHARED / "imagenet1k_samples"), "oe_limit": 1000},
    },
    "mvtec-grid": {
        "preset": ["mvtec", "cpu_mvtec"],
        "data": {"dataset": "mvtec", "root": str(SHARED / "mvtec_ad_subset"), "classes": ["grid"]},
    },
    "mvtec-hazelnut": {
        "preset": ["mvtec", "cpu_mvtec"],
        "data": {"dataset": "mvtec", "root": str(SHARED / "hazelnut_toy"), "classes": ["hazelnut"]},
    },
}
QUICK = {
    "data": {"train_limit": 64, "test_limit": 60, "num_workers": 0},
    "train": {"epochs": 1, "epoch_repeats": 1, "batch_size": 16, "threads": 2},
    "anomalies": {"oe_limit": 100},
}


def _merge(base: dict, extra: dict) -> dict:
    out = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for key, value in extra.items():
        out[key] = {**out.get(key, {}), **value} if isinstance(value, dict) else value
    return out


def profile_params(
    name: str,
    seeds: list[int],
    classes: list[str] | None,
    quick: bool,
    limits: tuple[int | None, int | None] = (None, None),
) -> dict:
    """A complete params file: the repository's presets, the profile, tracking off; ``limits``
    (train, test) replace the profile's data.train_limit/test_limit where given."""
    presets = yaml.safe_load((ROOT / "params.yaml").read_text())["presets"]
    params = _merge(PROFILES[name], {"train": {"seeds": seeds, "output_dir": "runs", "progress": False}})
    params = _merge(params, {"data": {"cache_dir": str(ROOT / "cache")}, "tracking": {"enabled": False}})
    for key, limit in zip(("train_limit", "test_limit"), limits, strict=True):
        if limit is not None:
            params["data"][key] = limit
    if classes:
        params["data"]["classes"] = classes
    if quick:
        params = _merge(params, QUICK)
        params["data"].setdefault("classes", ["0"] if name == "fmnist" else ["airplane"])
    params["presets"] = presets
    return params


def commit() -> str:
    done = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    dirty = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT, capture_output=True, text=True
    )
    return done.stdout.strip() + ("+changes" if dirty.stdout.strip() else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("profile", choices=sorted(PROFILES))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--classes", nargs="*", default=None, help="default: the profile's (all for fmnist)")
    parser.add_argument("--objectives", nargs="+", default=["fcdd", "hsc", "ae"])
    parser.add_argument("--figure-images", type=int, default=10)
    parser.add_argument("--out", type=Path, default=None, help="default: cache/bench_objectives/<profile>")
    parser.add_argument("--quick", action="store_true", help="one class, one seed, tiny limits, one epoch")
    parser.add_argument("--train-limit", type=int, default=None, help="data.train_limit for every objective")
    parser.add_argument("--test-limit", type=int, default=None, help="data.test_limit for every objective")
    parser.add_argument(
        "--from-runs", type=Path, nargs="+", default=None, help="tabulate these --out folders"
    )
    args = parser.parse_args(argv)
    if args.from_runs:
        return tabulate(args, argv)
    if args.quick:
        args.seeds = args.seeds[:1]
    out = (args.out or ROOT / "cache" / "bench_objectives" / args.profile).resolve()
    out.mkdir(parents=True, exist_ok=True)
    (out / "params.yaml").write_text(
        yaml.safe_dump(
            profile_params(
                args.profile, args.seeds, args.classes, args.quick, (args.train_limit, args.test_limit)
            ),
            sort_keys=False,
        )
    )
    compare = {
        "objectives": args.objectives,
        "output_dir": "runs",
        "figure_images": args.figure_images,
        "blur": True,
    }
    (out / "compare.yaml").write_text(yaml.safe_dump({"compare": compare}, sort_keys=False))
    env = dict(
        os.environ,
        FCDD_PARAMS="params.yaml",
        FCDD_COMPARE_PARAMS="compare.yaml",
        PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
        PREFECT_HOME=str(out / ".prefect"),
    )
    env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    started, code = datetime.datetime.now(datetime.timezone.utc), commit()  # the code the runs train with
    with open(out / "stage.log", "w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.stages.compare"],
            cwd=out,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    if done.returncode != 0:
        print(
            f"bench_objectives: the comparison stage failed (exit {done.returncode}); see {out / 'stage.log'}",
            file=sys.stderr,
        )
        return 1
    report = (out / "outputs" / "compare" / "report.md").read_text()
    return write_results(out, started, argv, report, code)


def write_results(
    out: Path, started: datetime.datetime, argv: list[str] | None, report: str, code: str
) -> int:
    """results.md: machine, date, ``code`` (the commit the runs started at), command, report."""
    sys.path.insert(0, str(ROOT))
    from fcdd.hardware import machine_line

    hours = (datetime.datetime.now(datetime.timezone.utc) - started).total_seconds() / 3600
    command = ["python", "benchmarks/bench_objectives.py", *(sys.argv[1:] if argv is None else argv)]
    header = [
        f"- machine: {machine_line()}",
        f"- date: {started:%Y-%m-%d %H:%M} UTC, {hours:.1f} h wall, commit {code}",
        f"- command: `{' '.join(shlex.quote(a) for a in command)}`",
        "",
    ]
    (out / "results.md").write_text("\n".join(header) + report)
    print((out / "results.md").read_text())
    return 0


def tabulate(args: argparse.Namespace, argv: list[str] | None) -> int:
    """One table over the run folders of several --out folders (each a run of this script):
    every run's metrics.json, the time per run of each folder's stage (where it trained them all)."""
    sys.path.insert(0, str(ROOT))
    import json

    from fcdd.comparison import comparison_table
    from fcdd.config import load_config
    from pipelines.stages.compare_report import draw_figure, render

    started = datetime.datetime.now(datetime.timezone.utc)
    folders = [f.resolve() for f in args.from_runs]
    rows, times = [], {}
    for folder in folders:
        summary = json.loads((folder / "outputs" / "compare" / "summary.json").read_text())
        for run in summary["runs"]:
            run = {**run, "run_dir": str(folder / run["run_dir"])}
            rows.append(
                {
                    **run,
                    **{
                        k: json.loads((Path(run["run_dir"]) / "metrics.json").read_text()).get(k)
                        for k in ("image_auc", "pixel_auc")
                    },
                }
            )
        for objective, seconds in summary["seconds_per_run"].items():
            n = sum(1 for r in summary["runs"] if r["objective"] == objective)
            if seconds is not None:
                times.setdefault(objective, []).append((seconds, n))
    objectives = list(dict.fromkeys(r["objective"] for r in rows))
    settings = {"objectives": objectives, "figure_images": args.figure_images, "blur": True}
    cfg = load_config(folders[0] / "params.yaml")
    out = (args.out or folders[0].parent / f"{folders[0].name}-all").resolve()
    out.mkdir(parents=True, exist_ok=True)
    figure = draw_figure(cfg, settings, rows, out / "comparison.png")  # each class's first seed
    seconds = {
        o: sum(s * n for s, n in times[o]) / sum(n for _, n in times[o]) if o in times else None
        for o in objectives
    }
    summary = {
        "dataset": cfg.data.dataset,
        "settings": settings,
        "seconds_per_run": seconds,
        "table": comparison_table(rows, objectives),
        "runs": rows,
    }
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    return write_results(out, started, argv, render(summary, figure), commit())


if __name__ == "__main__":
    sys.exit(main())
