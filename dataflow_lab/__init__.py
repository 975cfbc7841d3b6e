"""dataflow_lab: typed classes become database models, models become workflow nodes.

>>> from dataflow_lab import DataFlow, WorkflowBuilder, LocalRuntime
"""

from .dataflow import DataFlow
from .errors import (
    ConnectionError,
    DataFlowError,
    MigrationError,
    NodeExecutionError,
    NodeNotFoundError,
    NotFoundError,
    TransactionError,
    ValidationError,
    WorkflowValidationError,
)
from .runtime import AsyncLocalRuntime, LocalRuntime
from .workflow import Workflow, WorkflowBuilder

__version__ = "0.1.0"

__all__ = [
    "AsyncLocalRuntime",
    "ConnectionError",
    "DataFlow",
    "DataFlowError",
    "LocalRuntime",
    "MigrationError",
    "NodeExecutionError",
    "NodeNotFoundError",
    "NotFoundError",
    "TransactionError",
    "ValidationError",
    "Workflow",
    "WorkflowBuilder",
    "WorkflowValidationError",
    "__version__",
]
