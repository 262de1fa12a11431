"""A torchrun worker to try the ``anyrdzv-etcd`` backend with: gloo on the CPU.

Each worker all-reduces ``rank + 1`` and prints what it got, beside what torchrun told
it. Run two agents of two workers each on one machine (see the README's "torchrun on
etcd v3" section)::

    torchrun --rdzv-backend=anyrdzv-etcd --rdzv-endpoint=127.0.0.1:2379 --rdzv-id=demo \\
             --nnodes=2 --nproc-per-node=2 --local-addr=127.0.0.1 examples/torchrun_allreduce.py

Every worker of the job prints the same sum, ``1 + 2 + ... + WORLD_SIZE``.

The workers of an agent share its stdout, so each line goes out in one ``write(2)``
(:func:`say`): ``print()`` makes two writes, the text and then the newline, and under
``PYTHONUNBUFFERED=1`` the lines of two workers can interleave between them.
"""

from __future__ import annotations

import os
import sys

import torch
import torch.distributed as dist


def say(line: str) -> None:
    """Write ``line`` and a newline to stdout in one ``write(2)``.

    One write of a line is never split by another process's write: to a pipe, up to
    ``PIPE_BUF`` (4,096) bytes are atomic, and to a file, Linux writes it at one offset.
    """
    sys.stdout.flush()  # whatever print() left in the buffer goes first
    data = f"{line}\n".encode()
    while data:  # a short write happens only when the line is too long to be atomic
        data = data[os.write(sys.stdout.fileno(), data) :]


def main() -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    tensor = torch.tensor([float(rank + 1)])
    dist.all_reduce(tensor)
    expected = world * (world + 1) / 2
    say(
        f"rank {rank} of {world} (node {os.environ['GROUP_RANK']} of "
        f"{os.environ['GROUP_WORLD_SIZE']}, master {os.environ['MASTER_ADDR']}:"
        f"{os.environ['MASTER_PORT']}): all_reduce sum {tensor.item():g}, expected {expected:g}"
    )
    dist.destroy_process_group()
    if tensor.item() != expected:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
