"""PyTorch's elastic-rendezvous utilities for async code, on anyio."""

from ._config import parse_rendezvous_config as parse_rendezvous_config
from ._delay import backoff as backoff
from ._delay import delay as delay
from ._endpoint import Endpoint as Endpoint
from ._endpoint import parse_rendezvous_endpoint as parse_rendezvous_endpoint
from ._endpoint import try_parse_port as try_parse_port
from ._etcd._store import ClusterStatus as ClusterStatus
from ._etcd._store import EtcdStore as EtcdStore
from ._etcd._store import MemberStatus as MemberStatus
from ._exceptions import LeaseExpired as LeaseExpired
from ._exceptions import StoreCompacted as StoreCompacted
from ._exceptions import StoreConnectionError as StoreConnectionError
from ._exceptions import StoreError as StoreError
from ._exceptions import StorePermissionError as StorePermissionError
from ._exceptions import StoreProtocolError as StoreProtocolError
from ._heartbeat import Heartbeat as Heartbeat
from ._heartbeat import HeartbeatLost as HeartbeatLost
from ._hostname import HostMatch as HostMatch
from ._hostname import LocalIdentity as LocalIdentity
from ._hostname import explain_machine_hostname as explain_machine_hostname
from ._hostname import local_identity as local_identity
from ._hostname import matches_machine_hostname as matches_machine_hostname
from ._members import MemberEvent as MemberEvent
from ._members import MemberEventType as MemberEventType
from ._members import MembersSnapshot as MembersSnapshot
from ._members import members as members
from ._members import watch_members as watch_members
from ._memory_store import MemoryStore as MemoryStore
from ._periodic import Tick as Tick
from ._periodic import periodic as periodic
from ._rendezvous import Rendezvous as Rendezvous
from ._rendezvous import RendezvousClosed as RendezvousClosed
from ._rendezvous import RendezvousError as RendezvousError
from ._rendezvous import RendezvousInfo as RendezvousInfo
from ._rendezvous import RendezvousTimeout as RendezvousTimeout
from ._store import CasResult as CasResult
from ._store import EventType as EventType
from ._store import KeyValue as KeyValue
from ._store import Lease as Lease
from ._store import LeaseStore as LeaseStore
from ._store import StoreEvent as StoreEvent
from ._timer import PeriodicTimer as PeriodicTimer
from ._timer import TimerStatistics as TimerStatistics
from ._txn import Compare as Compare
from ._txn import Delete as Delete
from ._txn import DeleteResult as DeleteResult
from ._txn import Get as Get
from ._txn import GetResult as GetResult
from ._txn import Put as Put
from ._txn import PutResult as PutResult
from ._txn import TxnResult as TxnResult
from ._util import fixup_module_metadata as _fixup_module_metadata

__version__ = "0.1.0"

__all__ = (
    "CasResult",
    "ClusterStatus",
    "Compare",
    "Delete",
    "DeleteResult",
    "Endpoint",
    "EtcdStore",
    "EventType",
    "Get",
    "GetResult",
    "Heartbeat",
    "HeartbeatLost",
    "HostMatch",
    "KeyValue",
    "Lease",
    "LeaseExpired",
    "LeaseStore",
    "LocalIdentity",
    "MemberEvent",
    "MemberEventType",
    "MemberStatus",
    "MembersSnapshot",
    "MemoryStore",
    "PeriodicTimer",
    "Put",
    "PutResult",
    "Rendezvous",
    "RendezvousClosed",
    "RendezvousError",
    "RendezvousInfo",
    "RendezvousTimeout",
    "StoreCompacted",
    "StoreConnectionError",
    "StoreError",
    "StoreEvent",
    "StorePermissionError",
    "StoreProtocolError",
    "Tick",
    "TimerStatistics",
    "TxnResult",
    "backoff",
    "delay",
    "explain_machine_hostname",
    "local_identity",
    "matches_machine_hostname",
    "members",
    "parse_rendezvous_config",
    "parse_rendezvous_endpoint",
    "periodic",
    "try_parse_port",
    "watch_members",
)

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
