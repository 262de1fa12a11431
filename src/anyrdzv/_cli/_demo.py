"""``anyrdzv demo``: an elastic rendezvous of a few nodes on a :class:`MemoryStore`, in one
process: the ranks assigned, a node killed, the survivors re-forming, on a timeline in
milliseconds.

Each node is what a real host would have: its own store object (here a link to the one
in-memory store), its own lease and its own watch. Killing a node is a crash: its task is
cancelled and its link to the store is cut, so its goodbye never arrives and its lease is
left to expire, as a SIGKILLed process leaves it.
"""

from __future__ import annotations

import argparse
import importlib.util
import logging
import math
from contextlib import aclosing
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar

import anyio
import anyio.lowlevel

from .._exceptions import RendezvousError, StoreConnectionError
from .._rendezvous._rendezvous import Rendezvous
from .._stores._memory import MemoryStore
from .._stores._wrapper import StoreWrapper
from ._errors import UsageError, is_interrupt

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import TextIO

    from .._stores._protocol import LeaseStore

_T = TypeVar("_T")

#: The event loops the demo runs on.
BACKENDS = ("asyncio", "uvloop", "trio")

#: The run's lease renewals: every 0.5 s, two missed make a node dead (a TTL of 1 s).
KEEP_ALIVE_INTERVAL = 0.5
KEEP_ALIVE_MAX_ATTEMPT = 2

#: How long the whole demo may take before it gives up, in seconds.
DEADLINE = 10.0

#: The store methods a crashed node's link no longer passes on.
_CALLS = frozenset(
    {
        "grant",
        "keep_alive",
        "revoke",
        "put",
        "get",
        "get_prefix",
        "get_prefix_kv",
        "delete",
        "delete_prefix",
        "compare_and_swap",
        "txn",
        "time_to_live",
    }
)


def _nodes(text: str) -> int:
    try:
        count = int(text)
    except ValueError:
        count = 0
    if not 3 <= count <= 8:
        raise argparse.ArgumentTypeError(f"must be a whole number from 3 to 8, got {text!r:.40}")
    return count


def _seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not 0 <= seconds <= 5:
        raise argparse.ArgumentTypeError(f"must be 0 to 5 seconds, got {text!r:.40}")
    return seconds


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``demo`` command to ``commands``, and return its parser."""
    demo = commands.add_parser(
        "demo",
        help="watch an elastic rendezvous: ranks, a node killed, the survivors re-forming",
        description=(
            "Run an elastic rendezvous of a few nodes on a MemoryStore, in this process: "
            "every node is ranked in round 0; then one node is killed (a crash: its lease "
            "is left to expire), the survivors see it lost and form round 1 with new "
            "ranks, and the run is closed. Each event is one line of a timeline in "
            "milliseconds; a summary closes it. Exit status 0, or 1 if the survivors do "
            f"not re-form within {DEADLINE:g} s."
        ),
    )
    demo.add_argument(
        "--nodes",
        type=_nodes,
        default=4,
        metavar="N",
        help="how many nodes, 3 to 8 (default: 4); the run takes N-1 to N",
    )
    demo.add_argument(
        "--kill-after",
        type=_seconds,
        default=0.5,
        metavar="SECONDS",
        help="how long round 0 runs before a node is killed (default: 0.5)",
    )
    demo.add_argument(
        "--backend",
        choices=BACKENDS,
        default="asyncio",
        help="the event loop (default: asyncio)",
    )
    demo.set_defaults(handler=run)
    return demo


class _Link(StoreWrapper):
    """One node's link to the shared store: it passes every call on, until the node
    crashes; then every call fails, as a dead process's would never arrive."""

    def __init__(self, store: LeaseStore, node: str) -> None:
        super().__init__(store)
        self._node = node
        self.crashed = False

    async def intercept(self, method: str, call: Callable[[], Awaitable[_T]]) -> _T:
        if self.crashed and method in _CALLS:
            await anyio.lowlevel.checkpoint()
            raise StoreConnectionError(f"node {self._node!r} has crashed")
        return await call()


@dataclass
class _Timeline:
    """The demo's events, printed as they come, one line each, and what the summary
    needs."""

    out: TextIO
    started: float
    ranked: dict[int, dict[str, float]] = field(default_factory=dict)
    lost: dict[str, float] = field(default_factory=dict)
    killed_at: float | None = None
    victim: str | None = None
    goodbye_lost: bool = False
    re_formed_round: int | None = None

    def now(self) -> float:
        """Milliseconds since the start."""
        return (anyio.current_time() - self.started) * 1000

    def header(self) -> None:
        self.out.write(f"{'time ms':>8}  {'node':<7} {'event':<8} detail\n")

    def event(self, node: str, kind: str, detail: str) -> float:
        at = self.now()
        self.out.write(f"{at:8.0f}  {node:<7} {kind:<8} {detail}\n")
        self.out.flush()
        return at


class _GoodbyeFilter(logging.Filter):
    """Turns the crashed node's failed goodbye (its heartbeat cannot revoke its lease),
    which the library logs as a WARNING, into a line of the timeline."""

    def __init__(self, timeline: _Timeline) -> None:
        super().__init__()
        self.timeline = timeline

    def filter(self, record: logging.LogRecord) -> bool:
        victim = self.timeline.victim
        if (
            victim is None
            or record.levelno != logging.WARNING
            or not record.name.startswith("anyrdzv.")
            or "has crashed" not in record.getMessage()
        ):
            return True
        if not self.timeline.goodbye_lost:
            self.timeline.goodbye_lost = True
            self.timeline.event(
                victim, "no-bye", "its goodbye cannot reach the store: its lease will expire"
            )
        return False


def run(args: argparse.Namespace, out: TextIO) -> int:
    """Run the demo on ``args.backend``; return 0 once the survivors have re-formed, or 1.

    :raises UsageError: if the backend asked for is not installed
    """
    backend: str = args.backend
    if backend in ("uvloop", "trio") and importlib.util.find_spec(backend) is None:
        raise UsageError(f"--backend {backend} needs {backend}: pip install {backend}")
    options = {"use_uvloop": True} if backend == "uvloop" else {}
    name = "trio" if backend == "trio" else "asyncio"
    try:
        status: int = anyio.run(_demo, args, out, backend=name, backend_options=options)
    except BaseException as exc:
        # Ctrl-C that reached a node's task leaves the task group in a group: it is
        # still Ctrl-C (exit status 130); anything else is raised as it is.
        if is_interrupt(exc) and not isinstance(exc, KeyboardInterrupt):
            raise KeyboardInterrupt from None
        raise
    return status


async def _demo(args: argparse.Namespace, out: TextIO) -> int:
    count: int = args.nodes
    run_id = "demo"
    names = [f"node-{i}" for i in range(count)]
    victim = names[1]
    store = MemoryStore()
    links = {name: _Link(store, name) for name in names}
    nodes = {
        name: Rendezvous(
            links[name],
            run_id,
            node=name,
            min_nodes=count - 1,
            max_nodes=count,
            join_timeout=DEADLINE,
            last_call_timeout=1,
            close_timeout=1,
            keep_alive_interval=KEEP_ALIVE_INTERVAL,
            keep_alive_max_attempt=KEEP_ALIVE_MAX_ATTEMPT,
        )
        for name in names
    }
    ttl_ms = math.ceil(KEEP_ALIVE_INTERVAL * KEEP_ALIVE_MAX_ATTEMPT) * 1000
    out.write(
        f"anyrdzv demo: {count} nodes of run {run_id!r} on one MemoryStore, in one process "
        f"({args.backend}); min_nodes {count - 1}, max_nodes {count}, lease TTL {ttl_ms} ms\n"
    )
    timeline = _Timeline(out, anyio.current_time())
    timeline.header()
    survivors = [name for name in names if name != victim]
    scopes = {name: anyio.CancelScope() for name in names}
    re_formed = anyio.Event()
    all_ranked = anyio.Event()

    async def node(name: str) -> None:
        rdzv = nodes[name]
        with scopes[name]:
            async with rdzv:
                timeline.event(name, "join", "next_rendezvous()")
                while True:
                    info = await rdzv.next_rendezvous()
                    timeline.ranked.setdefault(info.round, {})[name] = timeline.event(
                        name,
                        "ranked",
                        f"round {info.round}: rank {info.rank} of {info.world_size}",
                    )
                    if len(timeline.ranked[0]) == count:
                        all_ranked.set()
                    if info.round > 0 and set(timeline.ranked[info.round]) == set(survivors):
                        timeline.re_formed_round = info.round
                        re_formed.set()
                    async with aclosing(rdzv.changes()) as changes:
                        change = await anext(changes)
                    if change == "closed":
                        timeline.event(name, "closed", "changes() yielded 'closed': leaving")
                        return
                    timeline.lost.setdefault(name, timeline.now())
                    timeline.event(
                        name, "change", f"changes() yielded {change!r}: next_rendezvous()"
                    )

    goodbye = _GoodbyeFilter(timeline)
    handlers = logging.getLogger().handlers
    for handler in handlers:
        handler.addFilter(goodbye)
    try:
        with anyio.move_on_after(DEADLINE) as deadline:
            async with anyio.create_task_group() as tg:
                for name in names:
                    tg.start_soon(node, name)
                await all_ranked.wait()
                await anyio.sleep(args.kill_after)
                timeline.victim = victim
                timeline.killed_at = timeline.event(
                    victim, "killed", "crashed: its task cancelled, its link to the store cut"
                )
                links[victim].crashed = True
                scopes[victim].cancel()
                await re_formed.wait()
                await nodes[survivors[0]].set_closed()
    except RendezvousError as exc:
        out.write(f"FAILED: {exc}\n")
        return 1
    finally:
        for handler in handlers:
            handler.removeFilter(goodbye)
    if deadline.cancelled_caught:
        out.write(f"FAILED: the survivors did not re-form within {DEADLINE:g} s\n")
        return 1
    keys, _ = await store.get_prefix(f"/anyrdzv/{run_id}/")
    _summary(timeline, count, victim, ttl_ms, len(keys))
    return 0


def _summary(timeline: _Timeline, count: int, victim: str, ttl_ms: int, keys: int) -> None:
    killed = timeline.killed_at
    assert killed is not None
    first = max(timeline.ranked[0].values())
    seen = max(timeline.lost.values()) - killed
    assert timeline.re_formed_round is not None
    again = max(timeline.ranked[timeline.re_formed_round].values()) - killed
    out = timeline.out
    out.write(
        f"summary: round 0 ranked all {count} nodes {first:.0f} ms after the start; "
        f"{victim} was killed at {killed:.0f} ms;\n"
        f"         the {count - 1} survivors saw it lost {seen:.0f} ms later (its lease TTL "
        f"is {ttl_ms} ms), and round {timeline.re_formed_round} ranked them {again:.0f} ms after the kill;\n"
        f"         the run was closed, and {keys} key(s) of it remain in the store\n"
    )
