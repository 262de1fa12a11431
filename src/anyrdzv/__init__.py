"""PyTorch's elastic-rendezvous utilities for async code, on anyio."""

from ._config import parse_rendezvous_config as parse_rendezvous_config
from ._delay import backoff as backoff
from ._delay import delay as delay
from ._endpoint import Endpoint as Endpoint
from ._endpoint import parse_rendezvous_endpoint as parse_rendezvous_endpoint
from ._endpoint import try_parse_port as try_parse_port
from ._hostname import HostMatch as HostMatch
from ._hostname import LocalIdentity as LocalIdentity
from ._hostname import explain_machine_hostname as explain_machine_hostname
from ._hostname import local_identity as local_identity
from ._hostname import matches_machine_hostname as matches_machine_hostname
from ._periodic import Tick as Tick
from ._periodic import periodic as periodic
from ._timer import PeriodicTimer as PeriodicTimer
from ._timer import TimerStatistics as TimerStatistics
from ._util import fixup_module_metadata as _fixup_module_metadata

__version__ = "0.1.0"

__all__ = (
    "Endpoint",
    "HostMatch",
    "LocalIdentity",
    "PeriodicTimer",
    "Tick",
    "TimerStatistics",
    "backoff",
    "delay",
    "explain_machine_hostname",
    "local_identity",
    "matches_machine_hostname",
    "parse_rendezvous_config",
    "parse_rendezvous_endpoint",
    "periodic",
    "try_parse_port",
)

_fixup_module_metadata(__name__, globals())
del _fixup_module_metadata
