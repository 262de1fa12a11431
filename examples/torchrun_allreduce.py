"""A torchrun worker to try the ``anyrdzv-etcd`` backend with: gloo on the CPU.

Each worker all-reduces ``rank + 1`` and prints what it got, beside what torchrun told
it. Run two agents of two workers each on one machine (see the README's "torchrun on
etcd v3" section)::

    torchrun --rdzv-backend=anyrdzv-etcd --rdzv-endpoint=127.0.0.1:2379 --rdzv-id=demo \\
             --nnodes=2 --nproc-per-node=2 --local-addr=127.0.0.1 examples/torchrun_allreduce.py

Every worker of the job prints the same sum, ``1 + 2 + ... + WORLD_SIZE``.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tensor = torch.tensor([float(rank + 1)])
    dist.all_reduce(tensor)
    expected = world * (world + 1) / 2
    print(
        f"rank {rank} of {world} (node {os.environ['GROUP_RANK']} of "
        f"{os.environ['GROUP_WORLD_SIZE']}, master {os.environ['MASTER_ADDR']}:"
        f"{os.environ['MASTER_PORT']}): all_reduce sum {tensor.item():g}, expected {expected:g}",
        flush=True,
    )
    dist.destroy_process_group()
    if tensor.item() != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
