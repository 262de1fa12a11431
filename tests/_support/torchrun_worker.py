"""A torchrun worker for the tests and the benchmark: gloo all_reduce on the CPU.

Each step all-reduces ``rank + 1`` and appends one JSON line to ``$RESULTS``: the step,
the sum, and the environment torchrun gave the worker. ``--steps N --pause S`` runs N
steps S seconds apart, and ``--until-world W`` goes on stepping (up to 1,000 steps) unless
the world has W workers, so that an agent restarts it; ``--until-file F`` goes on
stepping (up to 1,000 steps) until the file F exists on any worker (the workers agree
through the all_reduce, so they stop at the same step); ``--fail-file F`` makes the
worker that finds F at a step take it away and exit 1 (a worker failure, once). The last
line of a run that finished has ``"done": true``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist

ENV = (
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "GROUP_RANK",
    "GROUP_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "TORCHELASTIC_RESTART_COUNT",
    "TORCHELASTIC_RUN_ID",
    "TORCHELASTIC_USE_AGENT_STORE",
)


def _take(path: str) -> bool:
    """Take the file away, if it is there: True for the one worker that did."""
    try:
        os.rename(path, f"{path}.taken.{os.getpid()}")
    except FileNotFoundError:
        return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--until-world", type=int, default=0)
    parser.add_argument("--until-file", default="")
    parser.add_argument("--fail-file", default="")
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    env = {name: os.environ.get(name) for name in ENV}
    with open(os.environ["RESULTS"], "a", encoding="utf-8") as results:
        steps = args.steps if args.until_world in (0, world) and not args.until_file else 1_000
        for step in range(steps):
            if args.fail_file and _take(args.fail_file):
                sys.exit(1)
            stop = float(bool(args.until_file) and os.path.exists(args.until_file))
            tensor = torch.tensor([float(rank + 1), stop])
            dist.all_reduce(tensor)
            last = step == steps - 1 or tensor[1].item() > 0
            line = {"pid": os.getpid(), "step": step, "sum": tensor[0].item(), **env}
            line["done"] = last
            results.write(json.dumps(line) + "\n")
            results.flush()
            if last:
                break
            if args.pause:
                time.sleep(args.pause)
    assert world == int(os.environ["WORLD_SIZE"])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
