"""Synthetic anomalies from random init (docs/synthetic-anomalies.md): each recipe on the MVTec grid
subset, the hazelnut toy set and magnetic tiles, several seeds, one identical training budget.

    python benchmarks/bench_synthetic.py                                 # 3 sets x 4 recipes x 3 seeds
    python benchmarks/bench_synthetic.py --epochs 12 --input-size 160    # a reduced, identical budget
    python benchmarks/bench_synthetic.py --table cache/bench_synthetic/results.csv   # tabulate only
    python benchmarks/bench_synthetic.py --quick                         # smoke run, a few minutes
    python benchmarks/bench_synthetic.py --speed                         # generator cost per image

Each (set, recipe, seed) trains once with the CPU profile (presets ``[mvtec, cpu_mvtec]`` or
``[folder, cpu_mvtec]``, VGG11-BN from random init) and is evaluated with each BatchNorm mode of
``--bn`` (``train.bn_recalibration`` acts on the final weights: the run resumes from its finished
checkpoint and only re-scores). Every evaluated row is appended to ``results.csv`` at once, and a
run already there is skipped, so an interrupted benchmark continues where it stopped. The table:
image AUC, pixel AUC and AUPRO as mean ± std over seeds per set, the three sets' mean, the guard
rail's separation AUC (fcdd/separation.py), training minutes per run, and the goals of issue 26
(recommended recipe against today's confetti). Run from the repository root.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

SHARED = Path("../shared/data")
MAGNETIC_FOLDER = {
    "nominal": ["MT_Free/Imgs"],
    "anomalous": ["MT_Blowhole/Imgs", "MT_Break/Imgs", "MT_Crack/Imgs", "MT_Fray/Imgs", "MT_Uneven/Imgs"],
    "masks": ["MT_*/Imgs/*.png"],
}
SETS = {
    # name: (presets, overrides); grid and hazelnut train on all their good images (25, 28) and
    # check the guard on them; magnetic tile trains on 48 and holds 20 more out for the guard.
    "grid": (["mvtec", "cpu_mvtec"], [f"data.root={SHARED / 'mvtec_ad_subset'}", "data.classes=[grid]"]),
    "hazelnut": (["mvtec", "cpu_mvtec"], [f"data.root={SHARED / 'hazelnut_toy'}", "data.classes=[hazelnut]"]),
    "magnetic_tile": (
        ["folder", "cpu_mvtec"],
        [
            f"data.root={SHARED / 'magnetic_tile'}",
            "data.classes=[magnetic_tile]",
            f"data.folder={json.dumps(MAGNETIC_FOLDER)}",
            "data.train_limit=68",
            "data.test_limit=120",
            "evaluation.calibration=20",
        ],
    ),
}
RECIPES = {
    "confetti": "confetti",  # today's
    "perlin": "perlin",
    "cutpaste": "{cutpaste: 0.5, scar: 0.5}",  # CutPaste's rectangles and scars, half each
    "mix": "{perlin: 0.5, cutpaste: 0.25, scar: 0.25}",
}
BASELINE = ("confetti", "off")
FIELDS = (
    "set", "recipe", "seed", "bn", "image_auc", "pixel_auc", "aupro", "separation_auc", "separation_ok",
    "separation_images", "final_loss", "epochs", "n_test", "train_s", "wall_s", "kind", "budget", "error",
)  # fmt: skip
QUICK = [
    "train.epochs=1", "train.epoch_repeats=1", "train.batch_size=4", "data.train_limit=6", "data.test_limit=8",
    "evaluation.heatmap_count=2", "evaluation.calibration=0",
]  # fmt: skip


def budget_overrides(args: argparse.Namespace) -> list[str]:
    """The budget every recipe shares; empty for the CPU profile as it is."""
    out = []
    if args.epochs is not None:
        out.append(f"train.epochs={args.epochs}")
    if args.input_size is not None:
        out += [
            f"model.input_size={args.input_size}",
            f"data.stored_size={round(args.input_size * 240 / 224)}",
        ]
    return out + (QUICK if args.quick else [])


def load(set_name: str, recipe: str, seed: int, bn: str, args: argparse.Namespace, out: Path):
    from fcdd.config import load_config

    presets, overrides = SETS[set_name]
    every = [
        f"anomalies.kind={RECIPES[recipe]}",
        f"train.seeds=[{seed}]",
        f"train.bn_recalibration={json.dumps(bn)}",  # quoted: YAML reads a bare off as false
        "train.device=cpu",
        "train.progress=false",
        "tracking.enabled=false",
        f"train.output_dir={out / 'runs' / recipe}",
        f"data.cache_dir={args.cache_dir}",
        *budget_overrides(args),
        *args.override,
    ]
    params = yaml.safe_load(Path(args.params).read_text()) or {}
    with tempfile.NamedTemporaryFile("w", suffix=".yaml", delete=False) as f:
        yaml.safe_dump(
            {"presets": params.get("presets", {})}, f
        )  # the presets only, never the main job's sections
    try:
        return load_config(f.name, overrides + every, preset=presets)
    finally:
        Path(f.name).unlink()


def run_one(set_name: str, recipe: str, seed: int, args: argparse.Namespace, out: Path) -> list[dict]:
    """Train once (the first BatchNorm mode), re-score with the others; one row per mode."""
    from fcdd.experiment import run_dir_for, run_experiment

    rows = []
    for i, bn in enumerate(args.bn):
        cfg = load(set_name, recipe, seed, bn, args, out)
        cls = cfg.data.classes[0]
        if i == 0:
            shutil.rmtree(run_dir_for(cfg, cls, seed), ignore_errors=True)  # a benchmark trains from scratch
        start = time.perf_counter()
        result = run_experiment(cfg, cls, seed)
        wall = time.perf_counter() - start
        m, history = result.metrics, result.history
        sep_path = result.run_dir / "separation.json"
        sep = json.loads(sep_path.read_text()) if sep_path.exists() else {}
        rows.append(
            {
                "set": set_name, "recipe": recipe, "seed": seed, "bn": bn,
                "image_auc": m.get("image_auc"), "pixel_auc": m.get("pixel_auc"), "aupro": m.get("aupro"),
                "separation_auc": sep.get("auc"), "separation_ok": sep.get("ok"),
                "separation_images": sep.get("images"),
                "final_loss": history[-1]["loss"] if history else None, "epochs": len(history),
                "n_test": m.get("n_test"),
                "train_s": sum(h.get("epoch_time_s", 0.0) for h in history) if i == 0 else None,
                "wall_s": wall, "kind": RECIPES[recipe], "budget": " ".join(budget_overrides(args)) or "cpu_mvtec",
                "error": "",
            }
        )  # fmt: skip
    return rows


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def append_rows(path: Path, rows: list[dict]) -> None:
    new = not path.exists()
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerows(rows)


# ------------------------------------------------------------------ the table
def _num(v) -> float | None:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def mean_std(values: list[float | None]) -> tuple[float | None, float | None, int]:
    vals = [v for v in values if v is not None]
    if not vals:
        return None, None, 0
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mean, std, len(vals)


def _ms(values: list[float | None]) -> str:
    """mean ± std over seeds; a lone value (one seed) has no std and is printed alone."""
    mean, std, n = mean_std(values)
    if mean is None:
        return "–"
    return f"{mean:.3f}" if n == 1 else f"{mean:.3f} ± {std:.3f}"


def _auto(rows: list[dict]) -> list[dict]:
    """The BatchNorm mode the guard rail's separation would choose per run (ties: the first of --bn
    order), as extra rows with bn 'auto'."""
    out, runs = [], {}
    for r in rows:
        if not r.get("error"):
            runs.setdefault((r["set"], r["recipe"], r["seed"]), []).append(r)
    for modes in runs.values():
        scored = [r for r in modes if _num(r["separation_auc"]) is not None]
        if len(scored) == len(modes) > 1:
            best = max(scored, key=lambda r: _num(r["separation_auc"]))
            out.append({**best, "bn": f"auto ({best['bn']})", "train_s": modes[0]["train_s"]})
    return out


def summarise(rows: list[dict], sets: list[str]) -> dict:
    """{(recipe, bn): {set: {metric: [values]}}} over seeds; 'auto (x)' rows pooled as 'auto'."""
    table: dict = {}
    for r in rows + _auto(rows):
        if r.get("error"):
            continue
        bn = "auto" if r["bn"].startswith("auto") else r["bn"]
        cell = table.setdefault((r["recipe"], bn), {}).setdefault(r["set"], {})
        for k in ("image_auc", "pixel_auc", "aupro", "separation_auc", "train_s"):
            cell.setdefault(k, []).append(_num(r[k]))
    return table


def set_means(cells: dict, sets: list[str], metric: str) -> list[float | None]:
    """Per seed position, the mean over the sets (only where every set has that seed)."""
    per_set = [[v for v in cells.get(s, {}).get(metric, []) if v is not None] for s in sets]
    if not all(per_set):
        return []
    k = min(len(v) for v in per_set)
    return [sum(v[i] for v in per_set) / len(per_set) for i in range(k)]


def format_table(rows: list[dict], sets: list[str]) -> str:
    table = summarise(rows, sets)
    head = (
        "| recipe | BatchNorm | "
        + " | ".join(f"{s} image | {s} pixel | {s} AUPRO" for s in sets)
        + " | **mean image** | **mean pixel** | mean AUPRO | separation | train min/run |"
    )
    lines = [head, "|" + "---|" * (2 + 3 * len(sets) + 5)]
    order = {r: i for i, r in enumerate(RECIPES)}
    for (recipe, bn), cells in sorted(table.items(), key=lambda kv: (order.get(kv[0][0], 99), kv[0][1])):
        parts = [recipe, bn]
        for s in sets:
            c = cells.get(s, {})
            parts += [_ms(c.get("image_auc", [])), _ms(c.get("pixel_auc", [])), _ms(c.get("aupro", []))]
        parts += [f"**{_ms(set_means(cells, sets, m))}**" for m in ("image_auc", "pixel_auc")]
        parts.append(_ms(set_means(cells, sets, "aupro")))
        parts.append(_ms([v for s in sets for v in cells.get(s, {}).get("separation_auc", [])]))
        train = [v / 60 for s in sets for v in cells.get(s, {}).get("train_s", []) if v is not None]
        parts.append(f"{sum(train) / len(train):.1f}" if train else "–")
        lines.append("| " + " | ".join(parts) + " |")
    return "\n".join(lines)


def goals(rows: list[dict], sets: list[str], recipe: str, bn: str) -> str:
    """Issue 26's goals for ``recipe`` with ``bn`` against today's confetti (BatchNorm off)."""
    table = summarise(rows, sets)
    base, cand = table.get(BASELINE, {}), table.get((recipe, bn), {})
    if not base or not cand:
        return f"goals: no rows for {BASELINE} or ({recipe}, {bn}) yet"
    out = []
    for metric, need in (("image_auc", 0.10), ("pixel_auc", 0.05)):
        b, c = mean_std(set_means(base, sets, metric))[0], mean_std(set_means(cand, sets, metric))[0]
        if b is None or c is None:
            out.append(f"{metric}: incomplete")
            continue
        gain = c - b
        out.append(
            f"mean {metric} {b:.3f} -> {c:.3f} ({gain:+.3f}, goal +{need:.2f}: {'met' if gain >= need else f'missed by {need - gain:.3f}'})"
        )
    for s in sets:
        for metric in ("image_auc", "pixel_auc", "aupro"):
            b_mean, b_std, b_n = mean_std(base.get(s, {}).get(metric, []))
            c_mean, c_std, c_n = mean_std(cand.get(s, {}).get(metric, []))
            if b_mean is None or c_mean is None:
                continue
            allowed = max(b_std or 0.0, c_std or 0.0)
            if c_mean < b_mean - allowed:
                std = "one seed: no std" if min(b_n, c_n) < 2 else f"more than one std, {allowed:.3f}"
                out.append(f"LOSES on {s} {metric}: {b_mean:.3f} -> {c_mean:.3f} ({std})")
        image = mean_std(cand.get(s, {}).get("image_auc", []))[0]
        if image is not None and image < 0.5:
            out.append(f"INVERTED image scores on {s}: mean image AUC {image:.3f}")
    return "goals (" + f"{recipe}, BatchNorm {bn} vs confetti, off" + "): " + "; ".join(out)


# ------------------------------------------------------------------ the guard rail's threshold
def guard_study(out: Path, csv_path: Path) -> str:
    """Re-score every finished run of ``out/runs`` with the current guard (fcdd/separation.py), for
    BatchNorm off (the checkpoint's statistics) and nominal (model.pt as last saved), beside the test
    metrics of results.csv: which guard statistics flag the models that fail on real defects."""
    import torch

    from fcdd.data import build_datasets
    from fcdd.detector import Detector
    from fcdd.separation import detector_scores, guard
    from fcdd.stored_config import config_from_model

    tested = {
        (r["set"], r["recipe"], r["seed"], r["bn"]): r for r in read_rows(csv_path) if not r.get("error")
    }
    names = {"mvtec": None, "folder": "magnetic_tile"}
    rows = []
    for model_path in sorted((out / "runs").glob("*/*/*/seed*/model.pt")):
        recipe, dataset, cls, seed = (
            model_path.parts[-5],
            model_path.parts[-4],
            model_path.parts[-3],
            model_path.parts[-2][4:],
        )
        set_name = names[dataset] or cls
        detector = Detector.load(model_path)
        cfg = config_from_model(detector.meta, str(model_path))
        data = build_datasets(cfg, detector.meta["class"], int(seed))
        trained = torch.load(model_path.parent / "checkpoint.pt", map_location="cpu", weights_only=True)
        nominal_state = {k: v.clone() for k, v in detector.model.state_dict().items()}
        for bn in ("nominal", "off"):
            if bn == "off":
                detector.model.load_state_dict(trained["model"])
            else:
                detector.model.load_state_dict(nominal_state)
            detector.model.eval()
            sep = guard(data, detector_scores(detector), int(seed), trained["history"], 16)
            test = tested.get((set_name, recipe, seed, bn), {})
            rows.append({"set": set_name, "recipe": recipe, "seed": seed, "bn": bn, "auc": sep.auc,
                         "auc_max": sep.auc_max, "images": sep.images, "n": sep.n,
                         "image_auc": _num(test.get("image_auc")), "pixel_auc": _num(test.get("pixel_auc"))})  # fmt: skip
    with (out / "guard_study.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    lines = [
        "| set | recipe | seed | BatchNorm | separation (image score) | separation (heatmap max) | test image AUC | test pixel AUC |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f = lambda v: "–" if v is None else f"{v:.3f}"  # noqa: E731
        lines.append(
            f"| {r['set']} | {r['recipe']} | {r['seed']} | {r['bn']} | {f(r['auc'])} | {f(r['auc_max'])} | {f(r['image_auc'])} | {f(r['pixel_auc'])} |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ generator speed
def speed(side: int = 240, batch: int = 16, rounds: int = 3) -> str:
    """Milliseconds per anomalous image at the stored size: each per-sample source (what the CPU
    profile's loader runs) and the batched injector (the batched path), confetti beside them, with
    one torch thread as in a DataLoader worker."""
    import numpy as np
    import torch
    from PIL import Image

    from fcdd.data.confetti import Confetti
    from fcdd.data.synthetic import CODES, BatchInjector, CutPaste, Perlin, TexturePool
    from fcdd.data.training_set import TensorStore

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (batch, side, side, 3), dtype=np.uint8)
    pool = TexturePool(TensorStore(pixels))
    sources = {
        "confetti": Confetti(),
        "perlin": Perlin(pool),
        "cutpaste": CutPaste(),
        "scar": CutPaste(scar=True),
    }
    images = [Image.fromarray(p) for p in pixels]

    def best(fn) -> float:
        times = []
        for _ in range(rounds):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return min(times) * 1000 / batch

    rows = {}
    for name, source in sources.items():
        rows[name] = [best(lambda s=source: [s(im, rng) for im in images])]
    x = torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous()
    for name in ("perlin", "cutpaste", "scar"):
        inject = BatchInjector(sources[name])
        codes = torch.full((batch,), CODES[name])
        rows[name].append(best(lambda i=inject, c=codes: i(x, None, c, x, torch.Generator().manual_seed(0))))
    base = rows["confetti"][0]
    lines = [
        f"generator cost at {side}x{side} RGB, {torch.get_num_threads()} threads, best of {rounds} rounds of {batch}:",
        "| kind | per sample, ms/image | vs confetti | batched, ms/image |",
        "|---|---|---|---|",
    ]
    for name, (per, *batched) in rows.items():
        lines.append(
            f"| {name} | {per:.1f} | {per / base:.2f}x | {batched[0]:.1f} |"
            if batched
            else f"| {name} | {per:.1f} | 1.00x | – |"
        )
    return "\n".join(lines)


# ------------------------------------------------------------------ command line
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    p.add_argument("--recipes", nargs="+", choices=list(RECIPES), default=list(RECIPES))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--bn", nargs="+", choices=("off", "nominal", "train"), default=["off", "nominal", "train"],
                   help="BatchNorm modes evaluated per trained model (the first one trains)")  # fmt: skip
    p.add_argument(
        "--epochs", type=int, help="reduced budget: epochs for every recipe (default: the preset's 25)"
    )
    p.add_argument("--input-size", type=int, help="reduced budget: input side for every recipe (default 224)")
    p.add_argument("--quick", action="store_true", help="1 epoch on 6 images per set: a smoke run")
    p.add_argument("--output-dir", default="cache/bench_synthetic")
    p.add_argument("--cache-dir", default="cache", help="data.cache_dir (resized image copies)")
    p.add_argument("--params", default="params.yaml", help="file whose presets are used")
    p.add_argument("--recommend", default="cutpaste:nominal", help="RECIPE:BN checked against the goals")
    p.add_argument("--table", metavar="CSV", help="only tabulate an existing results.csv")
    p.add_argument("--speed", action="store_true", help="only time the generators (ms per image)")
    p.add_argument(
        "--guard-study", action="store_true", help="re-score --output-dir's runs with the guard rail"
    )
    p.add_argument("-o", "--override", action="append", default=[], metavar="KEY=VALUE")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    from fcdd.hardware import machine_line

    if args.speed:
        print(f"{speed()}\n{machine_line('cpu')}")
        return 0
    out = Path(args.output_dir)
    csv_path = Path(args.table) if args.table else out / "results.csv"
    if args.guard_study:
        print(guard_study(out, csv_path))
        return 0
    recipe, _, bn = args.recommend.partition(":")
    if not args.table:
        if args.quick:
            args.seeds, args.bn, args.recipes = args.seeds[:1], args.bn[:2], ["confetti", "cutpaste"]
            args.input_size = args.input_size or 64
        out.mkdir(parents=True, exist_ok=True)
        kept = [r for r in read_rows(csv_path) if not r.get("error")]  # failed runs are tried again
        csv_path.unlink(missing_ok=True)
        append_rows(csv_path, kept)
        done = {(r["set"], r["recipe"], r["seed"]) for r in kept}
        for seed in args.seeds:
            for set_name in args.sets:
                for rec in args.recipes:
                    if (set_name, rec, str(seed)) in done:
                        continue
                    print(f"[{time.strftime('%H:%M:%S')}] {set_name} {rec} seed {seed}", flush=True)
                    try:
                        rows = run_one(set_name, rec, seed, args, out)
                    except Exception as e:  # noqa: BLE001 - one failed run must not stop the others
                        rows = [
                            {
                                "set": set_name,
                                "recipe": rec,
                                "seed": seed,
                                "bn": "",
                                "error": f"{type(e).__name__}: {e}",
                            }
                        ]
                        print(f"  failed: {rows[0]['error']}", file=sys.stderr, flush=True)
                    append_rows(csv_path, rows)
    rows = read_rows(csv_path)
    sets = [s for s in SETS if any(r["set"] == s for r in rows)]
    header = (
        f"bench_synthetic: {len({(r['set'], r['recipe'], r['seed']) for r in rows})} runs, "
        f"budget {rows[0]['budget'] if rows else '–'}, {time.strftime('%Y-%m-%d %H:%M')}\n{machine_line('cpu')}"
    )
    text = f"{header}\n\n{format_table(rows, sets)}\n\n{goals(rows, sets, recipe, bn or 'off')}\n"
    failed = [r for r in rows if r.get("error")]
    if failed:
        text += (
            f"\n{len(failed)} failed runs: "
            + "; ".join(f"{r['set']} {r['recipe']} seed {r['seed']}: {r['error']}" for r in failed)
            + "\n"
        )
    if not args.table:
        (out / "results.md").write_text(text)
    print(text)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
