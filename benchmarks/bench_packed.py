"""Packed training vs K separate models: aggregate training images/s, in one run.

For each K, times K bare training steps one after another (forward + FCDD loss + backward + SGD
step, one model each, tensors in memory) against one packed step of the K models
(``fcdd.training.PackedModel``), alternating the two for ``--rounds`` rounds and taking medians, so
that load from elsewhere hits both alike.

    python benchmarks/bench_packed.py --quick                         # CNN28, K 1 3, CPU
    python benchmarks/bench_packed.py --device cuda --k 1 5 10 --net cnn28 cnn32
"""

from __future__ import annotations

import argparse
from types import SimpleNamespace

import torch

from fcdd.config import Config
from fcdd.models import build_net
from fcdd.objectives import fcdd_loss
from fcdd.testing.benchmark import alternate, header, table_head, table_row
from fcdd.training import PackedModel, make_optimizer, resolve_device, seed_everything

SIZES = {"cnn28": (28, 1, 128), "cnn32": (32, 3, 200), "vgg11_bn": (224, 3, 16)}


def bench(net: str, k: int, device: torch.device, steps: int, rounds: int) -> dict:
    size, channels, batch = SIZES[net]
    cfg = Config()
    cfg.train.lr = 1e-3
    models = []
    for i in range(k):
        seed_everything(i)
        models.append(build_net(net, size, channels).to(device).train())
    x = torch.randn(k, batch, channels, size, size, device=device)
    y = (torch.arange(batch, device=device) % 2).expand(k, batch)
    opts = [make_optimizer(m, cfg) for m in models]
    packed = PackedModel(models)
    trainable = packed.trainable()
    popt = make_optimizer(SimpleNamespace(parameters=lambda: trainable), cfg)  # type: ignore[arg-type]

    def separate() -> None:
        for m, o, xi, yi in zip(models, opts, x, y, strict=True):
            fcdd_loss(m(xi), yi).backward()
            o.step()
            o.zero_grad(set_to_none=True)

    def together() -> None:
        out = packed(x)
        torch.stack([fcdd_loss(out[i], y[i]) for i in range(k)]).sum().backward()
        popt.step()
        popt.zero_grad(set_to_none=True)

    def steps_of(fn):
        return lambda: [fn() for _ in range(steps)]

    cases = {"separate": steps_of(separate), "packed": steps_of(together)}
    separate()  # warm-up: one step of each
    together()
    times = alternate(cases, rounds=rounds, warmup=0, device=device, per=steps)
    sep, pack = times["separate"].wall_s, times["packed"].wall_s
    return {
        "net": net,
        "K": k,
        "batch": batch,
        "separate img/s": k * batch / sep,
        "packed img/s": k * batch / pack,
        "packed/separate": sep / pack,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--net", nargs="+", default=["cnn28"], choices=sorted(SIZES))
    p.add_argument("--k", nargs="+", type=int, default=[1, 3, 10])
    p.add_argument("--steps", type=int, default=None, help="steps per timed round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--quick", action="store_true", help="K 1 3, 2 steps, 2 rounds")
    args = p.parse_args(argv)
    device = resolve_device(args.device)
    if args.quick:
        args.k, args.rounds = [1, 3], 2
    steps = args.steps or (2 if args.quick or device.type == "cpu" else 20)
    title = f"packed vs separate training steps, {steps} steps x {args.rounds} rounds (medians)"
    print(header(device, title))
    print(table_head(["net", "K", "batch", "separate img/s", "packed img/s", "packed/separate"]))
    for net in args.net:
        for k in args.k:
            r = bench(net, k, device, steps, args.rounds)
            cells = [r["net"], r["K"], r["batch"], f"{r['separate img/s']:.1f}", f"{r['packed img/s']:.1f}"]
            print(table_row([*cells, f"{r['packed/separate']:.2f}"]), flush=True)


if __name__ == "__main__":
    main()
