"""use_member(): choose the etcd member that an :class:`~anyrdzv.EtcdStore` talks to, for
tests of failover that must know which member a request reaches first."""

from __future__ import annotations

from .._checks import check_str, wrong_type
from .._etcd._store import EtcdStore, send_requests_to


def use_member(store: EtcdStore, member: str) -> None:
    """Send ``store``'s requests to ``member`` from now on, and move its open watch
    streams there too, as a failover to that member would; a later failover moves them
    on as usual.

    An :class:`~anyrdzv.EtcdStore` with several members starts at one chosen at random,
    so that many processes spread their load over the cluster. A test that must know
    which member a request reaches first names it here: before the store is opened
    (opening contacts that member first), or at any time while it is open.
    :attr:`EtcdStore.member <anyrdzv.EtcdStore.member>` tells where requests go.

    :param store: the store
    :param member: one of the store's members, as ``host:port``, the way
        :attr:`EtcdStore.member <anyrdzv.EtcdStore.member>` names them
    :raises TypeError: if ``store`` is not an :class:`~anyrdzv.EtcdStore`, or
        ``member`` not a ``str``
    :raises ValueError: if ``member`` is not one of the store's members
    """
    if not isinstance(store, EtcdStore):
        raise wrong_type("store", store, "an EtcdStore")
    send_requests_to(store, check_str("member", member))
