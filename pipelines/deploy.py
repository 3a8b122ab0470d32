"""Set up what the deployments need, named from params.yaml: the work pool and the GPU limit.

    python -m pipelines.deploy [--params params.yaml] [--gpus N]   # then: prefect deploy --all

Idempotent: an existing pool is kept, an existing limit gets the new slot count. Equivalent to
`prefect work-pool create <pool> --type process` and `prefect gcl create <limit> --limit N`.
"""

from __future__ import annotations

import argparse

from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
    WorkPoolCreate,
)
from prefect.exceptions import ObjectNotFound

from fcdd.config import Config, load_config


def local_gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def ensure_infrastructure(cfg: Config, gpus: int, pool_type: str = "process") -> dict[str, int | str]:
    """Create the work pool if missing and set the concurrency limit to ``gpus`` slots."""
    if gpus < 1:
        raise ValueError(f"gpus: the concurrency limit needs at least one slot, got {gpus}")
    pool, limit = cfg.orchestration.work_pool, cfg.orchestration.concurrency_limit
    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
        except ObjectNotFound:
            client.create_work_pool(WorkPoolCreate(name=pool, type=pool_type))
        try:
            client.read_global_concurrency_limit_by_name(limit)
            client.update_global_concurrency_limit(limit, GlobalConcurrencyLimitUpdate(limit=gpus))
        except ObjectNotFound:
            client.create_global_concurrency_limit(GlobalConcurrencyLimitCreate(name=limit, limit=gpus))
    return {"work_pool": pool, "concurrency_limit": limit, "slots": gpus}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("-o", "--override", action="append", default=[], help="section.key=value")
    parser.add_argument(
        "--gpus", type=int, default=None, help="slots of the limit (default: GPUs here, else 1)"
    )
    args = parser.parse_args(argv)
    cfg = load_config(args.params, args.override)
    done = ensure_infrastructure(cfg, args.gpus if args.gpus is not None else max(local_gpu_count(), 1))
    print(
        f"work pool {done['work_pool']!r}; concurrency limit {done['concurrency_limit']!r}: {done['slots']} slots"
    )
    print("next: prefect deploy --all && prefect worker start --pool", done["work_pool"])


if __name__ == "__main__":
    main()
