"""CPU training levers, side by side in one run: bf16 autocast, channels-last, torch.compile,
oneDNN (mkldnn) off, BatchNorm folded into the frozen convolutions (VGG11-BN, model.freeze 15).

Each variant times the bare training step (forward, FCDD loss, backward, SGD-Nesterov step) of
the same net on in-memory tensors; rounds alternate between variants and medians are reported,
with the ratio to the plain fp32 eager step measured beside them.

    python benchmarks/bench_cpu_levers.py                       # CNN28 b128 and VGG11-BN b16
    python benchmarks/bench_cpu_levers.py --net cnn28 --compile # also torch.compile (slow to build)
    python benchmarks/bench_cpu_levers.py --net vgg11_bn --freeze 15  # the MVTec protocol's frozen net
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from fcdd.hardware import cpu_info
from fcdd.models import build_net
from fcdd.objectives import fcdd_loss
from fcdd.testing.benchmark import alternate, header, table_head, table_row

NETS = {"cnn28": (28, 1, 128), "cnn32": (32, 3, 200), "vgg11_bn": (224, 3, 16)}


def variants(compile_too: bool, net: str, freeze: int) -> dict[str, dict]:
    out = {
        "fp32 eager": {"bf16": False, "cl": False},
        "channels-last": {"bf16": False, "cl": True},
        "bf16 autocast": {"bf16": True, "cl": False},
        "bf16 + channels-last": {"bf16": True, "cl": True},
        "bf16 + cl, oneDNN off": {"bf16": True, "cl": True, "mkldnn": False},
        "fp32, oneDNN off": {"bf16": False, "cl": False, "mkldnn": False},
    }
    if net == "vgg11_bn" and freeze:
        out["bf16 + cl + frozen BN folded"] = {"bf16": True, "cl": True, "fold": True}
    if compile_too:
        out["bf16 + cl + compile"] = {"bf16": True, "cl": True, "compile": "default"}
        out["bf16 + cl + compile max-autotune"] = {
            "bf16": True,
            "cl": True,
            "compile": "max-autotune-no-cudagraphs",
        }
    return out


def fold_frozen_batchnorm(model: nn.Module) -> int:
    """Fold each frozen (eval-mode) BatchNorm into the convolution before it: exact in eval mode.
    VGG's features are one flat Sequential (conv, bn, relu, pool, ...); the first ``freeze`` are frozen."""
    layers = model.features._modules
    names = list(layers)[: model.freeze]
    folded = 0
    for name, bn_name in zip(names, names[1:], strict=False):
        conv, bn = layers[name], layers[bn_name]
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            fused = fuse_conv_bn_eval(conv.eval(), bn.eval()).requires_grad_(False)
            layers[name], layers[bn_name] = fused, nn.Identity()
            folded += 1
    return folded


def make_step(
    net: str,
    bf16: bool,
    cl: bool,
    compile: str | None = None,
    mkldnn: bool = True,
    fold: bool = False,
    freeze: int = 0,
):
    size, channels, batch = NETS[net]
    torch.manual_seed(0)
    kwargs = {"freeze": freeze} if net == "vgg11_bn" else {}
    model = build_net(net, size, channels, **kwargs).train()
    if fold and not fold_frozen_batchnorm(model):
        raise SystemExit("bench_cpu_levers: found no frozen Conv2d + BatchNorm2d pair to fold")
    fmt = torch.channels_last if cl else torch.contiguous_format
    model = model.to(memory_format=fmt)
    x = torch.randn(batch, channels, size, size).contiguous(memory_format=fmt)
    y = torch.arange(batch) % 2
    forward = torch.compile(model, mode=None if compile == "default" else compile) if compile else model

    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9, nesterov=True)

    def step() -> None:
        with torch.backends.mkldnn.flags(enabled=mkldnn):
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                out = forward(x)
            fcdd_loss(out, y).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step, batch


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--net", nargs="+", default=["cnn28", "vgg11_bn"], choices=sorted(NETS))
    p.add_argument(
        "--steps", type=int, default=None, help="steps per round (default 5 for small nets, 1 for VGG)"
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--compile", action="store_true", help="also torch.compile variants (minutes to build)")
    p.add_argument("--freeze", type=int, default=0, help="VGG11-BN: frozen feature modules (MVTec: 15)")
    args = p.parse_args(argv)
    print(header("cpu", f"CPU training levers, {args.rounds} alternating rounds (medians)"))
    if not cpu_info().bf16:
        print("note: no native bf16 on this CPU: the bf16 rows are emulated (the engine uses fp32 here)")
    print(table_head(["net", "lever", "images/s", "ratio to fp32 eager", "first step s"]))
    for net in args.net:
        steps = args.steps or (1 if net == "vgg11_bn" else 5)
        cases, first = {}, {}
        for name, v in variants(args.compile, net, args.freeze).items():
            step, batch = make_step(
                net,
                v["bf16"],
                v["cl"],
                v.get("compile"),
                mkldnn=v.get("mkldnn", True),
                fold=v.get("fold", False),
                freeze=args.freeze,
            )
            t = time.perf_counter()
            step()  # warm-up (compilation for the compiled variants)
            first[name] = time.perf_counter() - t
            cases[name] = lambda step=step, n=steps: [step() for _ in range(n)]
        times = alternate(cases, rounds=args.rounds, warmup=0, per=steps)
        base = times["fp32 eager"].wall_s
        frozen = f" frozen {args.freeze}" if net == "vgg11_bn" and args.freeze else ""
        for name, t in times.items():
            cells = [f"{net} b{batch}{frozen}", name, f"{batch / t.wall_s:.1f}", f"{base / t.wall_s:.2f}"]
            print(table_row([*cells, f"{first[name]:.1f}"]), flush=True)


if __name__ == "__main__":
    main()
