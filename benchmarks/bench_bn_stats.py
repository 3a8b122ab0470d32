"""BatchNorm statistics in eval mode (issue 13.6): train once, then score the test set with the
running statistics (what eval mode uses), with batch statistics (train mode), and with statistics
re-estimated from the final weights on nominal training images / on the training stream (the
procedure of fcdd/batchnorm.py, here with 2 shuffled passes of batch 8). Same weights throughout.

    python benchmarks/bench_bn_stats.py EPOCHS train magnetic_tile|grid|hazelnut
    python benchmarks/bench_bn_stats.py EPOCHS load NAME      # re-score the saved weights

Presets [folder, cpu_mvtec] (magnetic tile: 60 nominal training images, 80 test images) or
[mvtec, cpu_mvtec]; writes under cache/repro/. Run from the repository root.
"""

# ruff: noqa
import copy, json, sys, time
import numpy as np, torch
from torch.utils.data import DataLoader
from fcdd.config import load_config, preset_definitions
from fcdd.data import build_datasets
from fcdd.models import build_model
from fcdd.training import train, seed_everything, resolve_device
from fcdd.scoring import anomaly_scores
from fcdd.metrics import image_metrics

folder = {
    "nominal": ["MT_Free/Imgs"],
    "anomalous": ["MT_Blowhole/Imgs", "MT_Break/Imgs", "MT_Crack/Imgs", "MT_Fray/Imgs", "MT_Uneven/Imgs"],
    "masks": ["MT_*/Imgs/*.png"],
}
epochs = int(sys.argv[1]) if len(sys.argv) > 1 else 4
import yaml

presets = preset_definitions("params.yaml")
name = sys.argv[3] if len(sys.argv) > 3 else "magnetic_tile"
if name == "magnetic_tile":
    doc = {
        "preset": ["folder", "cpu_mvtec"],
        "presets": presets,
        "data": {
            "root": "../shared/data/magnetic_tile",
            "classes": ["magnetic_tile"],
            "folder": folder,
            "train_limit": 60,
            "test_limit": 80,
            "cache_dir": "cache/repro/cache",
            "num_workers": 0,
        },
        "train": {"epochs": epochs, "output_dir": "cache/repro/runs"},
    }
else:
    root = {"grid": "../shared/data/mvtec_ad_subset", "hazelnut": "../shared/data/hazelnut_toy"}[name]
    doc = {
        "preset": ["mvtec", "cpu_mvtec"],
        "presets": presets,
        "data": {"root": root, "classes": [name], "cache_dir": "cache/repro/cache", "num_workers": 0},
        "train": {"epochs": epochs, "output_dir": "cache/repro/runs"},
    }
open("cache/repro/params.yaml", "w").write(yaml.safe_dump(doc))
cfg = load_config("cache/repro/params.yaml")
torch.set_num_threads(2)
from fcdd.testing.benchmark import header

print(header("cpu", f"eval-mode BatchNorm statistics, {name}"))
data = build_datasets(cfg, cfg.data.classes[0], 0)
print(data.summary)
seed_everything(0)
model = build_model(cfg, in_channels=data.preprocess["channels"])
if len(sys.argv) > 2 and sys.argv[2] == "load":
    model.load_state_dict(torch.load(f"cache/repro/model_{name}.pt"))
else:
    import shutil

    shutil.rmtree("cache/repro/runs", ignore_errors=True)
    t0 = time.time()
    from fcdd.anomaly_map import ReceptiveFieldUpsampler

    up = ReceptiveFieldUpsampler(model.receptive_field, cfg.sigma, cfg.model.input_size)
    fit = train(model, data.train, cfg, torch.device("cpu"), "cache/repro/runs/r", upsampler=up)
    print("train s", time.time() - t0, [round(h["loss"], 4) for h in fit["history"]])
    torch.save(model.state_dict(), f"cache/repro/model_{name}.pt")
labels = np.asarray(data.test.labels)


def score(m, ds, train_mode=False, bs=16):
    m.train(train_mode)
    out = []
    with torch.no_grad():
        for b in DataLoader(ds, batch_size=bs, shuffle=False):
            out.append(anomaly_scores(m(b["image"])).image.numpy())
    m.eval()
    return np.concatenate(out)


def report(name, s):
    g, d = s[labels == 0], s[labels == 1]
    print(
        f"{name:30s} good {g.mean():.3f}±{g.std():.3f} defective {d.mean():.3f}±{d.std():.3f} AUC {image_metrics(labels, s)['auc']:.3f}"
    )


report("eval (running stats)", score(model, data.test))
sd = copy.deepcopy(model.state_dict())
report("train mode (batch stats)", score(copy.deepcopy(model), data.test, True))
# running stats vs nominal batch stats per BN layer
nom = copy.copy(data.train)
nom.probability = 0.0
for name, kind in [("recal nominal train images", nom), ("recal train loader (mix)", data.train)]:
    m = copy.deepcopy(model)
    bns = [x for x in m.modules() if isinstance(x, torch.nn.modules.batchnorm._BatchNorm)]
    for b in bns:
        b.reset_running_stats()
        b.momentum = None
    m.train()
    torch.manual_seed(1)
    with torch.no_grad():
        for _ in range(2):
            collate = getattr(kind, "collate", None)  # batch-augmenting sets hand out uint8 items
            for b in DataLoader(kind, batch_size=8, shuffle=True, collate_fn=collate):
                m(b["image"])
    m.eval()
    if kind is nom:
        for (n1, b1), b2 in zip(
            [(n, x) for n, x in model.named_modules() if isinstance(x, torch.nn.BatchNorm2d)], bns
        ):
            r = (b1.running_var / b2.running_var).mean().item()
            dm = ((b1.running_mean - b2.running_mean).abs() / b2.running_var.sqrt()).mean().item()
            print(f"  {n1}: running/recal var ratio {r:.3f}, |mean diff|/sd {dm:.3f}")
    report(name, score(m, data.test))
