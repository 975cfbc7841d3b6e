"""dataflow_lab: typed classes become database models, models become workflow nodes.

>>> from dataflow_lab import DataFlow, WorkflowBuilder, LocalRuntime
"""

from typing import TYPE_CHECKING

from .access import User
from .dataflow import DataFlow
from .encryption import Encrypted
from .errors import (
    AccessDeniedError,
    BackfillRequiredError,
    ConcurrencyError,
    ConnectionError,
    CycleNotConvergedError,
    DataFlowError,
    DecryptionError,
    DestructiveMigrationError,
    EncryptionError,
    MigrationError,
    MigrationRequiredError,
    NodeExecutionError,
    NodeNotFoundError,
    NodeTimeoutError,
    NotFoundError,
    PoolExhaustedError,
    RunTimeoutError,
    TenantRequiredError,
    TransactionError,
    UnknownNodeTypeError,
    ValidationError,
    WorkflowValidationError,
)
from .hooks import NodeRecord, RunHooks
from .modes import TransactionMode
from .nodes.switch import SwitchNode
from .retry import RetryPolicy
from .routing import RunResults, Skipped
from .runtime import AsyncLocalRuntime, LocalRuntime
from .workflow import Workflow, WorkflowBuilder, WorkflowInput

__version__ = "0.1.0"


if TYPE_CHECKING:  # pragma: no cover
    from .monitoring import MetricsCollector


def __getattr__(name: str) -> object:
    if name == "MetricsCollector":  # its modules (the anomaly detector, the views) load with monitoring
        from .monitoring import MetricsCollector

        return MetricsCollector
    if name == "DaskRuntime":  # its module is light, but keep dask's import cost off this path entirely
        from .dask_runtime import DaskRuntime

        return DaskRuntime
    if name == "ResumedCompensation":  # saga_log.py needs SQLAlchemy: loaded on first use
        from .saga_log import ResumedCompensation

        return ResumedCompensation
    if (
        name == "saga"
    ):  # the README writes @dataflow_lab.saga.compensate_with(...) after `import dataflow_lab`
        import importlib

        return importlib.import_module(".saga", __name__)
    raise AttributeError(f"module 'dataflow_lab' has no attribute {name!r}")


def load_ipython_extension(ip: object) -> None:
    """``%load_ext dataflow_lab``: registers the %dataflow magics (imported only now)."""
    from .notebook import load_ipython_extension as load

    load(ip)


def unload_ipython_extension(ip: object) -> None:
    """``%unload_ext dataflow_lab``: removes the %dataflow magics."""
    from .notebook import unload_ipython_extension as unload

    unload(ip)


__all__ = [
    "AccessDeniedError",
    "AsyncLocalRuntime",
    "ConcurrencyError",
    "ConnectionError",
    "CycleNotConvergedError",
    "DaskRuntime",
    "DataFlow",
    "DataFlowError",
    "DecryptionError",
    "Encrypted",
    "EncryptionError",
    "LocalRuntime",
    "BackfillRequiredError",
    "DestructiveMigrationError",
    "MetricsCollector",
    "MigrationError",
    "MigrationRequiredError",
    "NodeExecutionError",
    "NodeNotFoundError",
    "NodeRecord",
    "NodeTimeoutError",
    "NotFoundError",
    "PoolExhaustedError",
    "ResumedCompensation",
    "RetryPolicy",
    "RunHooks",
    "RunResults",
    "RunTimeoutError",
    "Skipped",
    "SwitchNode",
    "TenantRequiredError",
    "TransactionError",
    "TransactionMode",
    "UnknownNodeTypeError",
    "User",
    "ValidationError",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowInput",
    "WorkflowValidationError",
    "__version__",
]
