"""A torchrun worker for the tests and the benchmark: gloo all_reduce on the CPU.

Each step all-reduces ``rank + 1`` and appends one JSON line to ``$RESULTS``: the step,
the sum, and the environment torchrun gave the worker. ``--steps N --pause S`` runs N
steps S seconds apart, and ``--until-world W`` goes on stepping (up to 1,000 steps) unless
the world has W workers, so that an agent restarts it; the last line of a run
that finished has ``"done": true``.
"""

from __future__ import annotations

import argparse
import json
import os
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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.0)
    parser.add_argument("--until-world", type=int, default=0)
    args = parser.parse_args()
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    env = {name: os.environ.get(name) for name in ENV}
    with open(os.environ["RESULTS"], "a", encoding="utf-8") as results:
        steps = args.steps if args.until_world in (0, world) else 1_000
        for step in range(steps):
            tensor = torch.tensor([float(rank + 1)])
            dist.all_reduce(tensor)
            line = {"pid": os.getpid(), "step": step, "sum": tensor.item(), **env}
            line["done"] = step == steps - 1
            results.write(json.dumps(line) + "\n")
            results.flush()
            if args.pause and step < steps - 1:
                time.sleep(args.pause)
    assert world == int(os.environ["WORLD_SIZE"])
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
