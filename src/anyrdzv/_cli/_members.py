"""``anyrdzv members``: a group's members on etcd, or (``--watch``) them joining and
leaving, in words or as JSON lines."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

from .._membership._keys import members_prefix
from .._membership._members import MemberEvent, MembersSnapshot, members, watch_members
from ._options import add_reader_options
from ._secrets import PASSWORD_SOURCES
from ._store_command import read_or_watch

if TYPE_CHECKING:
    import argparse
    from typing import TextIO


def add_parser(
    commands: argparse._SubParsersAction[argparse.ArgumentParser],
) -> argparse.ArgumentParser:
    """Add the ``members`` command to ``commands``, and return its parser."""
    group = commands.add_parser(
        "members",
        help="list a group's members on etcd, or follow them joining and leaving",
        description=(
            f"List the members that heartbeat into a group on etcd, or follow them. "
            f"{PASSWORD_SOURCES}"
        ),
    )
    add_reader_options(
        group,
        "--group",
        subject_help="the group",
        watch="follow JOINED and LEFT events",
        json="print JSON, one object a line",
    )
    group.set_defaults(handler=run)
    return group


def _payload_text(payload: bytes) -> str:
    return payload.decode("utf-8", errors="backslashreplace")


def _show(args: argparse.Namespace, item: MembersSnapshot | MemberEvent, out: TextIO) -> None:
    if isinstance(item, MembersSnapshot):
        if args.json:
            record = {
                "group": args.group,
                "revision": item.revision,
                "members": {k: _payload_text(v) for k, v in sorted(item.members.items())},
            }
            out.write(json.dumps(record) + "\n")
        else:
            out.write(
                f"group {args.group!r} at revision {item.revision}: {len(item.members)} member(s)\n"
            )
            out.writelines(
                f"  {name}  {_payload_text(payload)}\n"
                for name, payload in sorted(item.members.items())
            )
    elif args.json:
        record = {
            "event": item.type.value,
            "member": item.member,
            "payload": _payload_text(item.payload),
            "revision": item.revision,
        }
        out.write(json.dumps(record) + "\n")
    else:
        out.write(f"{item.type.value:<6} {item.member}  (revision {item.revision})\n")


def run(args: argparse.Namespace, out: TextIO) -> int:
    """List the group's members, or follow them with ``--watch`` until SIGTERM or Ctrl-C.

    :return: 0, 1 when the store fails, 130 on Ctrl-C, 143 on SIGTERM
    :raises UsageError: if the group or an option is bad
    """
    return read_or_watch(
        args,
        out,
        check=lambda: members_prefix(args.group, args.prefix),
        read=lambda store: members(store, args.group, prefix=args.prefix),
        watch=lambda store: watch_members(store, args.group, prefix=args.prefix),
        show=lambda item: _show(args, item, out),
    )
