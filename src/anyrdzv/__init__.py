"""PyTorch's elastic-rendezvous utilities for async code, on anyio."""

from ._core._config import parse_rendezvous_config as parse_rendezvous_config
from ._core._delay import JitterMode as JitterMode
from ._core._delay import backoff as backoff
from ._core._delay import delay as delay
from ._core._endpoint import Endpoint as Endpoint
from ._core._endpoint import parse_rendezvous_endpoint as parse_rendezvous_endpoint
from ._core._endpoint import try_parse_port as try_parse_port
from ._core._hostname import HostMatch as HostMatch
from ._core._hostname import HostRule as HostRule
from ._core._hostname import LocalIdentity as LocalIdentity
from ._core._hostname import explain_machine_hostname as explain_machine_hostname
from ._core._hostname import local_identity as local_identity
from ._core._hostname import matches_machine_hostname as matches_machine_hostname
from ._core._periodic import FirstTick as FirstTick
from ._core._periodic import Periodic as Periodic
from ._core._periodic import Schedule as Schedule
from ._core._periodic import Tick as Tick
from ._core._periodic import periodic as periodic
from ._core._public import __version__ as __version__
from ._core._public import fixup_module_metadata as _fixup_module_metadata
from ._core._timer import PeriodicTimer as PeriodicTimer
from ._core._timer import TimerStatistics as TimerStatistics
from ._etcd._status import ClusterStatus as ClusterStatus
from ._etcd._status import MemberStatus as MemberStatus
from ._etcd._store import EtcdStore as EtcdStore
from ._exceptions import HeartbeatLost as HeartbeatLost
from ._exceptions import LeaseExpired as LeaseExpired
from ._exceptions import RendezvousClosed as RendezvousClosed
from ._exceptions import RendezvousError as RendezvousError
from ._exceptions import RendezvousTimeout as RendezvousTimeout
from ._exceptions import StoreCompacted as StoreCompacted
from ._exceptions import StoreConnectionError as StoreConnectionError
from ._exceptions import StoreError as StoreError
from ._exceptions import StorePermissionError as StorePermissionError
from ._exceptions import StoreProtocolError as StoreProtocolError
from ._membership._heartbeat import Heartbeat as Heartbeat
from ._membership._members import MemberEvent as MemberEvent
from ._membership._members import MemberEventType as MemberEventType
from ._membership._members import MembersSnapshot as MembersSnapshot
from ._membership._members import members as members
from ._membership._members import watch_members as watch_members
from ._rendezvous._ranks import RankOrder as RankOrder
from ._rendezvous._rendezvous import Rendezvous as Rendezvous
from ._rendezvous._rendezvous import RendezvousInfo as RendezvousInfo
from ._rendezvous._report import Bootstrap as Bootstrap
from ._rendezvous._report import NodeReport as NodeReport
from ._rendezvous._report import RunReport as RunReport
from ._rendezvous._report import read_run as read_run
from ._rendezvous._report import watch_run as watch_run
from ._rendezvous._rules import Change as Change
from ._stores._memory import MemoryStore as MemoryStore
from ._stores._model import CasResult as CasResult
from ._stores._model import EventType as EventType
from ._stores._model import KeyValue as KeyValue
from ._stores._model import Lease as Lease
from ._stores._model import StoreEvent as StoreEvent
from ._stores._protocol import LeaseStore as LeaseStore
from ._stores._protocol import WatchStream as WatchStream
from ._stores._txn import Compare as Compare
from ._stores._txn import CompareOp as CompareOp
from ._stores._txn import CompareTarget as CompareTarget
from ._stores._txn import Delete as Delete
from ._stores._txn import DeleteResult as DeleteResult
from ._stores._txn import Get as Get
from ._stores._txn import GetResult as GetResult
from ._stores._txn import Put as Put
from ._stores._txn import PutResult as PutResult
from ._stores._txn import TxnOp as TxnOp
from ._stores._txn import TxnOpResult as TxnOpResult
from ._stores._txn import TxnResult as TxnResult

__all__ = (
    "Bootstrap",
    "CasResult",
    "Change",
    "ClusterStatus",
    "Compare",
    "CompareOp",
    "CompareTarget",
    "Delete",
    "DeleteResult",
    "Endpoint",
    "EtcdStore",
    "EventType",
    "FirstTick",
    "Get",
    "GetResult",
    "Heartbeat",
    "HeartbeatLost",
    "HostMatch",
    "HostRule",
    "JitterMode",
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
    "NodeReport",
    "Periodic",
    "PeriodicTimer",
    "Put",
    "PutResult",
    "RankOrder",
    "Rendezvous",
    "RendezvousClosed",
    "RendezvousError",
    "RendezvousInfo",
    "RendezvousTimeout",
    "RunReport",
    "Schedule",
    "StoreCompacted",
    "StoreConnectionError",
    "StoreError",
    "StoreEvent",
    "StorePermissionError",
    "StoreProtocolError",
    "Tick",
    "TimerStatistics",
    "TxnOp",
    "TxnOpResult",
    "TxnResult",
    "WatchStream",
    "backoff",
    "delay",
    "explain_machine_hostname",
    "local_identity",
    "matches_machine_hostname",
    "members",
    "parse_rendezvous_config",
    "parse_rendezvous_endpoint",
    "periodic",
    "read_run",
    "try_parse_port",
    "watch_members",
    "watch_run",
)

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
