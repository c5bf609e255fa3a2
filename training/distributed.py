"""Data-parallel training entry point for MindSpore's own launcher, ``msrun``.

One node, two workers (CPU collective backend; on Ascend/GPU set --device-target):

    msrun --worker_num=2 --local_worker_num=2 --master_port=8118 --join=True \\
        training/distributed.py --config digits --data data/digits --run-dir runs/digits-dp

Several nodes: the same command on each, with ``--worker_num`` the total, ``--local_worker_num`` the
workers of this node, ``--master_addr`` the first node's address and ``--node_rank`` 0, 1, ...

Each rank trains on its slice of every global batch (``batch_size`` per rank); gradients are averaged by
``nn.DistributedGradReducer``; every rank starts from identical weights (the same seed); only rank 0 writes
checkpoints, the metrics log and the store. Without ``msrun`` (no ``MS_WORKER_NUM``/``RANK_SIZE``) it runs
as a single worker, so the same command line compares 1 and N workers.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

_WORLD_ENV = ("MS_WORKER_NUM", "RANK_SIZE")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="YAML file or shipped config name")
    parser.add_argument("--data", type=Path, help="ImageFolder root (or a folder holding train/ and val/)")
    parser.add_argument("--run-dir", type=Path, required=True, help="run directory shared by all ranks")
    parser.add_argument("--resume", action="store_true", help="continue the run in --run-dir")
    parser.add_argument("--store", type=Path, help="model store to publish to (rank 0); none: no publish")
    parser.add_argument("--max-steps", type=int)
    parser.add_argument("--device-target", default="CPU", choices=["CPU", "GPU", "Ascend"])
    parser.add_argument("--dump-weights", type=Path, help="every rank writes its final weights here (checks)")
    return parser


def is_distributed() -> bool:
    """Whether this process was started by msrun (or another launcher that sets the world size)."""
    return any(int(os.environ.get(name, "1") or 1) > 1 for name in _WORLD_ENV)


def _init_world(device_target: str) -> tuple[int, int]:
    import mindspore as ms

    ms.set_context(device_target=device_target)
    if not is_distributed():
        return 0, 1
    from mindspore.communication import get_group_size, get_rank, init

    init()
    ms.set_auto_parallel_context(parallel_mode=ms.ParallelMode.DATA_PARALLEL, gradients_mean=True)
    return get_rank(), get_group_size()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    rank, world_size = _init_world(args.device_target)

    from vitserve.model_store import ModelStore
    from vitserve.training.config import load_config
    from vitserve.training.trainer import result_summary, train
    from vitserve.vit.checkpoint import save_checkpoint, state_dict

    config = load_config(args.config)
    if args.data is not None:
        split = (args.data / "train").is_dir()
        config = config.replace(
            train_dir=str(args.data / "train" if split else args.data),
            val_dir=str(args.data / "val") if split and (args.data / "val").is_dir() else config.val_dir,
        )
    if args.max_steps is not None:
        config = config.replace(max_steps=args.max_steps)
    store = ModelStore(args.store) if args.store is not None else None
    result = train(
        config,
        store=store,
        run_dir=args.run_dir,
        resume=args.run_dir if args.resume else None,
        publish=store is not None,
        rank=rank,
        world_size=world_size,
    )
    if args.dump_weights is not None:
        args.dump_weights.mkdir(parents=True, exist_ok=True)
        save_checkpoint(state_dict(result.model), args.dump_weights / f"rank{rank}.ckpt")
    if rank == 0:
        print(json.dumps({**result_summary(result), "world_size": world_size}))
    return 0


if __name__ == "__main__":
    if __package__ in (None, ""):
        # Run as a script by msrun: sys.path[0] is training/, whose module names (config, data, ...) would
        # shadow top-level packages of the same names. The package itself is imported as vitserve.training.
        del sys.path[0]
    sys.exit(main())
