"""The rank order of a round: which participant holds which rank.

Pure: no I/O and no event loop. The run's coordinator calls :func:`order` once per
round, and writes the result, the participants in rank order, in the round's record, so
that every node reads the same ranks.

- ``"natural"`` (the default): node names compare with their runs of digits as numbers,
  so ``node7 < node66`` (torch sorts plainly, D7).
- ``"name"``: torch's plain sorted order of the names.
- ``"stable"``: a node that was a participant of the last round keeps its rank if it is
  below the new world size; the other nodes fill the free ranks, in natural order.
- A node's *topology label* (``"rack3/switch12"``) groups ranks: nodes with one label
  get contiguous ranks, labels in natural order, segment by segment (split at ``/``),
  so a rack's nodes are contiguous too; nodes without a label come first. Within a
  label, the names follow the order (``"name"`` or ``"natural"``). With ``"stable"``,
  the first round is grouped so; a later round keeps the survivors' ranks first, and
  the other nodes fill the free ranks in label order, then natural name order.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Final, Literal, get_args

from .._checks import echo, wrong_type

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping, Sequence

#: The rank orders.
RankOrder = Literal["natural", "stable", "name"]
RANK_ORDERS: Final[tuple[str, ...]] = get_args(RankOrder)
#: The default rank order.
DEFAULT_ORDER: Final = "natural"
#: The longest topology label.
MAX_LABEL = 1024

_DIGITS = re.compile(r"([0-9]+)")

#: A natural sort key: text runs (even places) and, for digit runs (odd places),
#: ``(length, digits)`` of the number without its leading zeros, then the run as is.
NaturalKey = tuple[str | tuple[int, str, str], ...]


def natural_key(text: str) -> NaturalKey:
    """The natural sort key of ``text``: its runs of ASCII digits compare as numbers
    (``node7 < node66``), the rest as text; ``node07`` and ``node7`` compare by their
    digits as text, so that distinct names never tie. A number of any length compares
    without being converted (by its length, then its digits).

    :param text: a node name, or a segment of a label
    :return: the key
    """
    parts = _DIGITS.split(text)
    return tuple(_number(part) if index % 2 else part for index, part in enumerate(parts))


def _number(digits: str) -> tuple[int, str, str]:
    significant = digits.lstrip("0")
    return len(significant), significant, digits


def label_key(label: str | None) -> tuple[NaturalKey, ...]:
    """The sort key of a topology label: the natural key of each ``/`` segment; no
    label sorts first.

    :param label: the label, or ``None``
    :return: the key
    """
    if label is None:
        return ()
    return tuple(natural_key(segment) for segment in label.split("/"))


def check_rank_order(name: str, value: object) -> RankOrder:
    """``value``, if it is a rank order.

    :param name: the parameter's name, for the message
    :raises TypeError: if it is not a ``str``
    :raises ValueError: if it is not one of :data:`RANK_ORDERS`
    :return: ``value``
    """
    if not isinstance(value, str):
        raise wrong_type(name, value, "a str")
    if value == "natural":
        return "natural"
    if value == "stable":
        return "stable"
    if value == "name":
        return "name"
    raise ValueError(f"{name} must be one of {', '.join(RANK_ORDERS)}, got {echo(value)}")


def check_topology(name: str, value: object) -> str | None:
    """``value``, if it is a topology label or ``None``.

    :param name: the parameter's name, for the message
    :raises TypeError: if it is neither ``None`` nor a ``str``
    :raises ValueError: if it is empty, longer than :data:`MAX_LABEL`, or holds a
        control character
    :return: ``value``
    """
    if value is None:
        return None
    if not isinstance(value, str):
        raise wrong_type(name, value, "a str or None")
    if not value:
        raise ValueError(f"{name} must not be empty (None means no label), got ''")
    if len(value) > MAX_LABEL:
        raise ValueError(
            f"{name} must be at most {MAX_LABEL} characters, got {len(value)}: {echo(value)}"
        )
    if not value.isprintable():
        raise ValueError(f"{name} must hold no control character, got {echo(value)}")
    return value


def order(
    names: Iterable[str],
    rank_order: RankOrder,
    *,
    labels: Mapping[str, str | None] | None = None,
    previous: Sequence[str] = (),
) -> tuple[str, ...]:
    """The participants ``names`` in rank order.

    :param names: the participants, distinct
    :param rank_order: the order
    :param labels: each node's topology label; a node missing here has none
    :param previous: the last round's participants in rank order, for ``"stable"``
    :return: ``names`` in rank order
    """
    known = labels or {}
    chosen = list(names)

    if rank_order == "name":
        ranked = sorted(chosen, key=lambda name: (label_key(known.get(name)), name))
    else:
        ranked = sorted(chosen, key=lambda name: (label_key(known.get(name)), natural_key(name)))
    if rank_order != "stable" or not previous:
        return tuple(ranked)
    size = len(ranked)
    slots: list[str | None] = [None] * size
    kept: set[str] = set()
    here = set(ranked)
    for rank, name in enumerate(previous[:size]):
        if name in here:
            slots[rank] = name
            kept.add(name)
    rest = iter(name for name in ranked if name not in kept)
    return tuple(name if name is not None else next(rest) for name in slots)
