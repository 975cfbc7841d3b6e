"""dataflow_lab: typed classes become database models, models become workflow nodes.

>>> from dataflow_lab import DataFlow, WorkflowBuilder, LocalRuntime
"""

from .access import User
from .dataflow import DataFlow
from .errors import (
    AccessDeniedError,
    BackfillRequiredError,
    ConcurrencyError,
    ConnectionError,
    DataFlowError,
    DestructiveMigrationError,
    MigrationError,
    MigrationRequiredError,
    NodeExecutionError,
    NodeNotFoundError,
    NotFoundError,
    TenantRequiredError,
    TransactionError,
    ValidationError,
    WorkflowValidationError,
)
from .monitoring import MetricsCollector
from .runtime import AsyncLocalRuntime, LocalRuntime
from .workflow import Workflow, WorkflowBuilder

__version__ = "0.1.0"


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
    "DataFlow",
    "DataFlowError",
    "LocalRuntime",
    "BackfillRequiredError",
    "DestructiveMigrationError",
    "MetricsCollector",
    "MigrationError",
    "MigrationRequiredError",
    "NodeExecutionError",
    "NodeNotFoundError",
    "NotFoundError",
    "TenantRequiredError",
    "TransactionError",
    "User",
    "ValidationError",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowValidationError",
    "__version__",
]
