"""Detection quality on real data, side by side with the paper (../shared/PAPER-RESULTS.md).

    python benchmarks/bench_quality.py --dataset fmnist            # 10 classes, presets [fmnist, cpu]
    python benchmarks/bench_quality.py --dataset mvtec             # grid + hazelnut, confetti and semi
    python benchmarks/bench_quality.py --dataset magnetic_tile     # folder dataset, image + pixel AUC
    python benchmarks/bench_quality.py --dataset cifar10           # CPU: 2 classes, reduced
    python benchmarks/bench_quality.py --dataset cifar10 --device cuda --parallel 10 --time-budget 200
    python benchmarks/bench_quality.py --from-runs runs/fmnist     # table of finished runs
    python benchmarks/bench_quality.py --quick --dataset fmnist cifar10 mvtec magnetic_tile

Profiles: ``cpu`` (default on a CPU) uses the reduced presets (cpu, cpu_mvtec) plus the limits of
CPU_LIMITS below; ``paper`` (default on a GPU) the paper's protocol presets. Only the presets of
params.yaml are used, never its top-level sections (those configure the main job). With
``--time-budget`` the epochs are chosen from a 2-epoch probe of all jobs run side by side, and
milestone schedules are scaled with them. Run from the repository root.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import yaml

SHARED = Path("../shared/data")
FMNIST_CLASSES = (
    "T-shirt/top", "trouser", "pullover", "dress", "coat",
    "sandal", "shirt", "sneaker", "bag", "ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


# PAPER-RESULTS.md: image AUC (Fashion-MNIST, CIFAR-10); MVTec pixel AUC (unsupervised, semi).
def slug(name: str) -> str:
    """'T-shirt/top' -> 't-shirt-top', as fcdd names run folders and metrics."""
    return re.sub(r"[^a-z0-9]+", "-", str(name).lower()).strip("-")


PAPER_IMAGE_AUC = {  # keyed by slug
    "fmnist": dict(
        zip(
            map(slug, FMNIST_CLASSES),
            (0.82, 0.98, 0.84, 0.92, 0.87, 0.90, 0.75, 0.99, 0.86, 0.94),
            strict=True,
        )
    ),
    "cifar10": dict(
        zip(CIFAR10_CLASSES, (0.95, 0.96, 0.91, 0.90, 0.94, 0.93, 0.97, 0.96, 0.97, 0.96), strict=True)
    ),
}
PAPER_PIXEL_AUC = {("grid", "confetti"): 0.91, ("grid", "semi"): 0.95}
# The hazelnut toy set is not MVTec's hazelnut: the paper's 0.95 / 0.97 are context only.
PAPER_PIXEL_CONTEXT = {("hazelnut", "confetti"): 0.95, ("hazelnut", "semi"): 0.97}
MAGNETIC_ANOMALOUS = ["MT_Blowhole/Imgs", "MT_Break/Imgs", "MT_Crack/Imgs", "MT_Fray/Imgs", "MT_Uneven/Imgs"]
DATASETS = ("fmnist", "cifar10", "mvtec", "magnetic_tile")

# Reductions for the cpu profile beyond the presets (minutes per run on 2 cores).
CPU_LIMITS = {
    "cifar10": ["train.epochs=4", "data.train_limit=2000", "data.test_limit=2000", "anomalies.oe_limit=1000",
                "train.threads=2"],
    "magnetic_tile": ["data.train_limit=48", "data.test_limit=120"],
}  # fmt: skip
# --quick: one tiny run per dataset, a smoke test that the benchmark still works end to end.
QUICK_LIMITS = {
    "fmnist": ["train.epochs=1", "data.train_limit=256", "data.test_limit=300", "anomalies.oe_limit=100"],
    "cifar10": ["train.epochs=1", "data.train_limit=256", "data.test_limit=300", "anomalies.oe_limit=100"],
    "mvtec": ["train.epochs=1", "train.epoch_repeats=1", "train.batch_size=4", "data.train_limit=4",
              "data.test_limit=8", "evaluation.heatmap_count=4"],
    "magnetic_tile": ["train.epochs=1", "train.epoch_repeats=1", "train.batch_size=4", "data.train_limit=4",
                      "data.test_limit=12", "evaluation.heatmap_count=4",
                      "evaluation.calibration=0"],  # 4 images leave none to calibrate on (folder preset: 10 %)
}  # fmt: skip


class BenchError(ValueError):
    """Bad benchmark arguments; the message names the value."""


@dataclass
class Job:
    """One (dataset, class, setting) run: everything a child process needs."""

    dataset: str  # bench name: fmnist | cifar10 | mvtec | magnetic_tile
    cls: str
    setting: str  # oe | confetti | semi
    presets: list[str]
    overrides: list[str]
    params: str = "params.yaml"
    epochs: int | None = None  # replaces the presets' epochs; milestones are scaled with it
    paper_image: float | None = None
    paper_pixel: float | None = None
    paper_note: str = ""
    fresh_under: str | None = None  # delete the job's old run folder when it lies below this folder


@dataclass
class Row:
    dataset: str
    cls: str
    setting: str
    image_auc: float | None = None
    pixel_auc: float | None = None
    aupro: float | None = None
    paper_image: float | None = None
    paper_pixel: float | None = None
    paper_note: str = ""
    epochs: int | None = None
    n_test: int | None = None
    wall_s: float | None = None
    train_s: float | None = None
    last_epoch_s: float | None = None
    error: str = ""
    extra: dict = field(default_factory=dict)


# ------------------------------------------------------------------ jobs
def jobs_for(dataset: str, args: argparse.Namespace) -> list[Job]:
    cpu = args.profile == "cpu"
    common = [
        f"train.device={args.device}",
        "train.progress=false",
        f"train.output_dir={json.dumps(str(Path(args.output_dir) / 'runs'))}",
        *( [f"data.num_workers={args.workers}"] if args.workers is not None else [] ),
    ]  # fmt: skip
    extra = (CPU_LIMITS.get(dataset, []) if cpu else []) + (QUICK_LIMITS[dataset] if args.quick else [])
    if args.weights:
        if dataset not in ("mvtec", "magnetic_tile"):
            raise BenchError(f"--weights {args.weights}: only the VGG datasets (mvtec, magnetic_tile) use it")
        if not Path(args.weights).is_file():
            raise BenchError(
                f"--weights {args.weights}: no such file (a torchvision VGG11-BN .pth state dict)"
            )
        extra += [
            f"model.weights_path={json.dumps(args.weights)}",
            "model.pretrained=true",
            "model.freeze=15",
        ]
    extra += args.override
    mk = dict(params=args.params, epochs=args.epochs, fresh_under=args.output_dir)
    if dataset == "fmnist":
        root = args.fmnist_root or _first_dir("data/fashion-mnist", "/usr/share/datasets/fashion-mnist")
        over = [f"data.root={json.dumps(root)}", f"anomalies.oe_source={json.dumps(args.oe_source)}"]
        classes = _canonical(_pick(args.classes, list(FMNIST_CLASSES), args.quick), FMNIST_CLASSES)
        presets = ["fmnist", "cpu"] if cpu else ["fmnist"]
        return [
            Job("fmnist", c, "oe", presets, over + common + extra, paper_image=PAPER_IMAGE_AUC["fmnist"][c], **mk)
            for c in classes
        ]  # fmt: skip
    if dataset == "cifar10":
        over = [
            f"data.root={json.dumps(args.cifar_root)}",
            f"anomalies.oe_source={json.dumps(args.oe_source)}",
        ]
        classes = _pick(args.classes, list(CIFAR10_CLASSES[:2] if cpu else CIFAR10_CLASSES), args.quick)
        return [
            Job("cifar10", c, "oe", ["cifar10"], over + common + extra, paper_image=PAPER_IMAGE_AUC["cifar10"][c], **mk)
            for c in _canonical(classes, CIFAR10_CLASSES)
        ]  # fmt: skip
    if dataset == "mvtec":
        sets = {"grid": args.mvtec_root, "hazelnut": args.hazelnut_root}
        classes = args.classes or (["hazelnut"] if args.quick else ["grid", "hazelnut"])
        settings = args.setting or (["confetti"] if args.quick else ["confetti", "semi"])
        jobs = []
        for c in classes:
            if c not in sets:
                raise BenchError(f"--classes {c}: the mvtec benchmark knows {', '.join(sets)}")
            for s in settings:
                # mvtec_semi last: its real defects replace the anomalies of the profiles before it
                presets = ["mvtec"] + (["cpu_mvtec"] if cpu else []) + (["mvtec_semi"] if s == "semi" else [])
                # One run folder per setting: runs/<setting>/mvtec/<class>/seed<k>.
                out_s = json.dumps(str(Path(args.output_dir) / "runs" / s))
                # the setting names the anomalies: confetti even where cpu_mvtec recommends others
                over = [f"data.root={json.dumps(sets[c])}", f"data.classes=[{c}]", f"anomalies.kind={s}"]
                paper = PAPER_PIXEL_AUC.get((c, s))
                note = (
                    "" if paper else f"toy set, not MVTec; paper's MVTec {c}: {PAPER_PIXEL_CONTEXT[(c, s)]}"
                )
                jobs.append(
                    Job(
                        "mvtec",
                        c,
                        s,
                        presets,
                        over + common + [f"train.output_dir={out_s}"] + extra,
                        paper_pixel=paper,
                        paper_note=note,
                        **mk,
                    )
                )
        return jobs
    if dataset == "magnetic_tile":
        folder = {
            "nominal": ["MT_Free/Imgs"],
            "anomalous": MAGNETIC_ANOMALOUS,
            "masks": ["MT_*/Imgs/*.png"],  # same stem as the .jpg beside it
        }
        over = [
            f"data.root={json.dumps(args.magnetic_root)}",
            "data.classes=[magnetic_tile]",
            f"data.folder={json.dumps(folder)}",
            "anomalies.kind=confetti",  # the setting it names (the presets recommend other anomalies)
        ]
        presets = ["folder", "cpu_mvtec"] if cpu else ["folder"]
        return [Job("magnetic_tile", "magnetic_tile", "confetti", presets, over + common + extra, **mk)]
    raise BenchError(f"--dataset {dataset}: not one of {', '.join(DATASETS)}")


def _first_dir(*candidates: str) -> str:
    return next((c for c in candidates if Path(c).is_dir()), candidates[0])


def _pick(chosen: list[str] | None, default: list[str], quick: bool) -> list[str]:
    classes = chosen or default
    return classes[:1] if quick and not chosen else classes


def _canonical(classes: list[str], known: tuple[str, ...]) -> list[str]:
    """Slugs of the classes, given by name, slug or index."""
    by_slug = {slug(k): slug(k) for k in known}
    out = []
    for c in classes:
        if c.isdigit() and int(c) < len(known):
            out.append(slug(known[int(c)]))
        elif slug(c) in by_slug:
            out.append(slug(c))
        else:
            raise BenchError(
                f"--classes {c}: not one of {', '.join(map(slug, known))} (or 0-{len(known) - 1})"
            )
    return out


# ------------------------------------------------------------------ running
def load_job_config(job: Job):
    """Defaults < the job's presets (fcdd's, or --params's own) < its overrides; epochs/milestones scaled."""
    from fcdd.config import load_config, preset_definitions

    params = Path(job.params)
    if not params.is_file():
        raise BenchError(f"--params {params}: no such file (run from the repository root)")
    presets = preset_definitions(params)
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump({"presets": presets}, f)
    try:
        cfg = load_config(f.name, job.overrides, preset=job.presets)
    finally:
        Path(f.name).unlink()
    if job.epochs is not None:
        scale_epochs(cfg, job.epochs)
    return cfg


def scale_epochs(cfg, epochs: int) -> None:
    """Set the epochs; a milestone schedule keeps its proportions (the paper's 400/500 of 600)."""
    if epochs < 1:
        raise BenchError(f"--epochs {epochs}: must be at least 1")
    old = cfg.train.epochs
    cfg.train.milestones = [max(1, round(m * epochs / old)) for m in cfg.train.milestones]
    cfg.train.epochs = epochs


def run_job(job: Job) -> Row:
    """Train and evaluate one job in this process."""
    from fcdd.experiment import run_dir_for, run_experiment

    row = Row(job.dataset, job.cls, job.setting, paper_image=job.paper_image, paper_pixel=job.paper_pixel)
    row.paper_note = job.paper_note
    start = time.perf_counter()
    cfg = load_job_config(job)
    seed = cfg.train.seeds[0]
    old_run = run_dir_for(cfg, job.cls, seed).resolve()
    # A run folder with a checkpoint would resume; a benchmark times a run from scratch.
    if job.fresh_under and old_run.is_dir() and old_run.is_relative_to(Path(job.fresh_under).resolve()):
        shutil.rmtree(old_run)
    result = run_experiment(cfg, job.cls, seed)
    m = result.metrics
    row.image_auc, row.pixel_auc, row.aupro = m.get("image_auc"), m.get("pixel_auc"), m.get("aupro")
    row.n_test, row.epochs = m.get("n_test"), len(result.history)
    row.wall_s = time.perf_counter() - start
    times = [h.get("epoch_time_s", 0.0) for h in result.history]
    row.train_s = float(sum(times))
    row.last_epoch_s = float(times[-1]) if times else None
    row.extra = {"run_dir": str(result.run_dir), "images_per_s": result.history[-1].get("images_per_s")}
    return row


def run_children(jobs: list[Job], out: Path, parallel: int, timeout: float | None) -> list[Row]:
    """Each job in its own process (``parallel`` at once); logs in out/logs/. A job that fails
    or passes the deadline gives a row with its error instead of stopping the others."""
    (out / "logs").mkdir(parents=True, exist_ok=True)
    deadline = None if timeout is None else time.monotonic() + timeout
    pending, running, rows = list(enumerate(jobs)), [], [None] * len(jobs)
    while pending or running:
        while pending and len(running) < parallel:
            i, job = pending.pop(0)
            result = out / "logs" / f"{i:02d}-{_slug(job)}.json"
            log = open(out / "logs" / f"{i:02d}-{_slug(job)}.log", "w")  # noqa: SIM115 - closed below
            cmd = [
                sys.executable,
                __file__,
                "--child",
                json.dumps(dataclasses.asdict(job)),
                "--child-result",
                str(result),
            ]
            running.append((i, job, subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT), log, result))  # fmt: skip
        time.sleep(0.2)
        for entry in list(running):
            i, job, proc, log, result = entry
            late = deadline is not None and time.monotonic() > deadline
            if proc.poll() is None and not late:
                continue
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            log.close()
            running.remove(entry)
            if result.is_file():
                rows[i] = Row(**json.loads(result.read_text()))
            else:
                why = "timed out" if late else f"exit status {proc.returncode}"
                rows[i] = Row(job.dataset, job.cls, job.setting, paper_image=job.paper_image,
                              paper_pixel=job.paper_pixel, error=f"{why}; see {log.name}")  # fmt: skip
    return rows  # type: ignore[return-value]


def _slug(job: Job) -> str:
    return "-".join(
        x.lower().replace("/", "-").replace(" ", "-") for x in (job.dataset, job.cls, job.setting)
    )


def epochs_for_budget(probe: list[Row], budget_s: float, margin: float = 0.9) -> int:
    """Epochs that fit ``budget_s`` for jobs run side by side, from a probe of the same jobs: per
    epoch, the slowest job's last epoch; fixed cost (start-up, data, evaluation) its wall minus training."""
    done = [r for r in probe if not r.error and r.last_epoch_s]
    if not done:
        raise BenchError("the throughput probe failed for every job; see the probe logs")
    per_epoch = max(r.last_epoch_s for r in done)
    fixed = max(r.wall_s - r.train_s for r in done) + 5.0  # + process and CUDA start-up
    return max(0, math.floor((margin * budget_s - fixed) / per_epoch))


def run_jobs(jobs: list[Job], args: argparse.Namespace) -> list[Row]:
    out = Path(args.output_dir)
    if args.parallel <= 1 and args.time_budget is None:
        rows = []
        for job in jobs:
            print(f"running {job.dataset} {job.cls} ({job.setting}), presets {job.presets}", flush=True)
            try:
                rows.append(run_job(job))
            except Exception as e:  # noqa: BLE001 - one failed run must not hide the others' results
                traceback.print_exc()
                rows.append(Row(job.dataset, job.cls, job.setting, error=f"{type(e).__name__}: {e}"))
        return rows
    if args.time_budget is None or args.epochs is not None:
        return run_children(jobs, out, args.parallel, args.time_budget)
    start = time.monotonic()
    probe_jobs = [_with(job, epochs=2, out=out / "probe") for job in jobs]
    probe = run_children(probe_jobs, out / "probe", max(args.parallel, 1), args.time_budget)
    left = args.time_budget - (time.monotonic() - start)
    cap = args.max_epochs or load_job_config(jobs[0]).train.epochs  # never beyond the protocol's
    epochs = min(cap, epochs_for_budget(probe, left))
    print(
        f"probe: {time.monotonic() - start:.0f} s; {left:.0f} s left -> {epochs} epochs per job", flush=True
    )
    if epochs <= 2:
        print("no time for more than the probe's 2 epochs: reporting the probe", flush=True)
        return probe
    return run_children([_with(job, epochs=epochs) for job in jobs], out, max(args.parallel, 1), left)


def _with(job: Job, epochs: int, out: Path | None = None) -> Job:
    over = list(job.overrides)
    if out is not None:
        over.append(f"train.output_dir={json.dumps(str(out / 'runs'))}")
    return dataclasses.replace(job, epochs=epochs, overrides=over)


# ------------------------------------------------------------------ tables
def rows_from_runs(folder: str) -> list[Row]:
    """Rows from finished run folders (<folder>/<class>/seed<k>/metrics.json), e.g. runs/fmnist."""
    files = sorted(Path(folder).glob("*/seed*/metrics.json"))
    if not files:
        raise BenchError(f"--from-runs {folder}: no <class>/seed<k>/metrics.json below it")
    rows = []
    for f in files:
        m = json.loads(f.read_text())
        ds, cls = m.get("dataset", Path(folder).name), slug(m.get("class", f.parent.parent.name))
        rows.append(
            Row(ds, cls, f"seed {m.get('seed', f.parent.name[4:])}", m.get("image_auc"), m.get("pixel_auc"),
                m.get("aupro"), PAPER_IMAGE_AUC.get(ds, {}).get(cls), epochs=m.get("epochs"), n_test=m.get("n_test"))
        )  # fmt: skip
    order = {c: i for i, c in enumerate(PAPER_IMAGE_AUC.get(rows[0].dataset, {}))}
    return sorted(rows, key=lambda r: (order.get(r.cls, len(order)), r.cls, r.setting))


def _f(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or v != v else f"{v:.{digits}f}"


def _mean(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None and v == v]
    return sum(vals) / len(vals) if vals else None


def format_table(rows: list[Row]) -> str:
    from fcdd.testing.benchmark import table_head

    columns = ["dataset", "class", "setting", "image AUC", "paper", "pixel AUC", "paper", "AUPRO", "epochs"]
    lines = [table_head([*columns, "n test", "minutes"])]
    for r in rows:
        paper_pixel = _f(r.paper_pixel) if r.paper_pixel is not None else (r.paper_note or "–")
        mins = _f(r.wall_s / 60, 1) if r.wall_s else "–"
        if r.error:
            lines.append(f"| {r.dataset} | {r.cls} | {r.setting} | failed: {r.error} |||||||||")
            continue
        lines.append(
            f"| {r.dataset} | {r.cls} | {r.setting} | {_f(r.image_auc)} | {_f(r.paper_image)} | {_f(r.pixel_auc)} | "
            f"{paper_pixel} | {_f(r.aupro)} | {r.epochs or '–'} | {r.n_test or '–'} | {mins} |"
        )
    groups: dict[tuple[str, str], list[Row]] = {}
    for r in rows:
        groups.setdefault((r.dataset, r.setting if not r.setting.startswith("seed") else ""), []).append(r)
    for (ds, setting), rs in groups.items():
        if len(rs) > 1 and ds in PAPER_IMAGE_AUC:  # one-vs-rest classes of one dataset: the paper's mean
            ok = [r for r in rs if not r.error]
            lines.append(
                f"| **{ds}** | **mean of {len(ok)}** | {setting} | **{_f(_mean([r.image_auc for r in ok]))}** | "
                f"{_f(_mean([r.paper_image for r in ok]))} | {_f(_mean([r.pixel_auc for r in ok]))} | "
                f"{_f(_mean([r.paper_pixel for r in ok]))} | {_f(_mean([r.aupro for r in ok]))} | | | "
                f"{_f(sum(r.wall_s for r in ok if r.wall_s) / 60 or None, 1)} |"
            )
    return "\n".join(lines)


def write_results(rows: list[Row], out: Path, header: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps([dataclasses.asdict(r) for r in rows], indent=2))
    (out / "results.md").write_text(f"{header}\n\n{format_table(rows)}\n")


# ------------------------------------------------------------------ command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", nargs="+", choices=DATASETS, default=[], help="benchmarks to run")
    p.add_argument("--from-runs", metavar="DIR", help="only tabulate finished runs, e.g. runs/fmnist")
    p.add_argument("--quick", action="store_true", help="one tiny run per dataset (smoke test, < 1 min each)")
    p.add_argument("--profile", choices=("cpu", "paper"), help="default: cpu on a CPU, paper on a GPU")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    p.add_argument("--classes", nargs="+", help="default: all (fmnist), 2 on CPU (cifar10), grid hazelnut")
    p.add_argument("--setting", nargs="+", choices=("confetti", "semi"), help="mvtec (default both)")
    p.add_argument("--epochs", type=int, help="override the epochs (milestones scale with them)")
    p.add_argument(
        "--weights", help="VGG11-BN ImageNet .pth for mvtec/magnetic_tile (freeze 15, as the paper)"
    )
    p.add_argument(
        "--parallel", type=int, default=1, help="jobs at once, one process each (e.g. 10 on a GPU)"
    )
    p.add_argument("--time-budget", type=float, help="seconds for all jobs; picks the epochs from a probe")
    p.add_argument("--max-epochs", type=int, help="cap of --time-budget's epochs (default: the presets')")
    p.add_argument("--workers", type=int, help="DataLoader workers per job (data.num_workers)")
    p.add_argument("--output-dir", default="cache/bench_quality", help="runs, logs, results.{md,json}")
    p.add_argument("--params", default="params.yaml", help="file whose presets are used")
    p.add_argument(
        "-o", "--override", action="append", default=[], metavar="KEY=VALUE", help="config override"
    )
    p.add_argument(
        "--fmnist-root", help="default: data/fashion-mnist, else /usr/share/datasets/fashion-mnist"
    )
    p.add_argument("--cifar-root", default=str(SHARED / "cifar10_jpeg.zip"))
    p.add_argument("--oe-source", default=str(SHARED / "imagenet1k_samples"))
    p.add_argument("--mvtec-root", default=str(SHARED / "mvtec_ad_subset"))
    p.add_argument("--hazelnut-root", default=str(SHARED / "hazelnut_toy"))
    p.add_argument("--magnetic-root", default=str(SHARED / "magnetic_tile"))
    p.add_argument("--child", help=argparse.SUPPRESS)
    p.add_argument("--child-result", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:  # one job of run_children
        row = run_job(Job(**json.loads(args.child)))
        Path(args.child_result).write_text(json.dumps(dataclasses.asdict(row)))
        print(format_table([row]))
        return 0
    try:
        if args.from_runs:
            print(format_table(rows_from_runs(args.from_runs)))
            return 0
        if not args.dataset:
            raise BenchError("give --dataset (fmnist, cifar10, mvtec, magnetic_tile) or --from-runs DIR")
        from fcdd.training import resolve_device

        device = resolve_device(args.device)
        args.profile = args.profile or ("cpu" if device.type == "cpu" else "paper")
        jobs = [job for ds in args.dataset for job in jobs_for(ds, args)]
    except BenchError as e:
        print(f"bench_quality: error: {e}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    rows = run_jobs(jobs, args)
    title = (
        f"bench_quality {' '.join(args.dataset)}: profile {args.profile}, "
        f"{'quick, ' if args.quick else ''}{time.strftime('%Y-%m-%d %H:%M')}, {time.perf_counter() - start:.0f} s"
    )
    from fcdd.testing.benchmark import header

    lines = header(device, title)
    write_results(rows, Path(args.output_dir), lines)
    print(lines)
    print(format_table(rows))
    print(f"wrote {Path(args.output_dir) / 'results.md'}")
    return 1 if any(r.error for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
