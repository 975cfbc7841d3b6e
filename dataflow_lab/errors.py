"""One error root for everything dataflow_lab raises.

Every error says what happened and, through ``hint``, what to do about it.
"""

from __future__ import annotations

import os.path
from collections.abc import Iterable

__all__ = [
    "AccessDeniedError",
    "ConcurrencyError",
    "ConnectionError",
    "CycleNotConvergedError",
    "DataFlowError",
    "DecryptionError",
    "DestructiveMigrationError",
    "EncryptionError",
    "MigrationError",
    "MigrationRequiredError",
    "NodeExecutionError",
    "NodeTimeoutError",
    "NodeNotFoundError",
    "NotFoundError",
    "PoolExhaustedError",
    "RunTimeoutError",
    "TenantRequiredError",
    "TransactionError",
    "UnknownNodeTypeError",
    "ValidationError",
    "WorkflowValidationError",
    "did_you_mean",
    "refuse_unknown_options",
]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """Return ' Did you mean 'x'?' for the closest candidate, or '' when none is close."""
    match = closest(name, candidates)
    return f" Did you mean '{match}'?" if match is not None else ""


def refuse_unknown_options(owner: str, given: Iterable[str], known: Iterable[str]) -> None:
    """Refuse option names ``owner`` does not take, with a did-you-mean and the list it does take."""
    known = sorted(known)
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValidationError(
            f"Unknown {owner} option '{unknown[0]}'.{did_you_mean(unknown[0], known)}",
            hint=f"known options: {', '.join(known)}.",
        )


def closest(name: str, candidates: Iterable[str]) -> str | None:
    """The candidate ``name`` most likely misspells, or None when none is close.

    Close means a few typos away (at most one edit per three characters, a swap of two
    neighbours counting as one), or sharing most of its start ('UserCreat' -> 'UserCreateNode').
    difflib's ratio alone is not enough: it finds 'read_user' close to 'create_usr'.
    """
    typed = str(name).lower()
    scored = []
    for candidate in candidates:
        text = str(candidate).lower()
        shorter, longer = sorted((typed, text), key=len)
        shared = len(os.path.commonprefix([typed, text]))
        near_start = shared >= max(4, 2 * len(longer) // 3)
        if not near_start and len(longer) - len(shorter) > max(1, len(longer) // 3):
            continue  # the lengths alone take more edits than a typo makes (the slow count is spared)
        distance = _typos(typed, text)
        if (distance < len(shorter) and distance <= max(1, len(longer) // 3)) or near_start:
            import difflib  # here: loaded when a name is misspelled, not by every import

            ratio = difflib.SequenceMatcher(None, typed, text).ratio()
            scored.append((distance, -ratio, str(candidate)))
    return min(scored)[2] if scored else None


def _typos(a: str, b: str) -> int:
    """Edits (insert, delete, replace, swap of neighbours) that turn ``a`` into ``b``."""
    previous, row = None, list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            cost = min(row[j] + 1, current[j - 1] + 1, row[j - 1] + (x != y))
            if previous is not None and j > 1 and x == b[j - 2] and a[i - 2] == y:
                cost = min(cost, previous[j - 2] + 1)
            current.append(cost)
        previous, row = row, current
    return row[-1]


class DataFlowError(Exception):
    """Root of every dataflow_lab error. ``hint`` says what to do."""

    def __init__(self, message: str, *, hint: str | None = None):
        self.message = message
        self.hint = hint
        super().__init__(f"{message} Hint: {hint}" if hint else message)

    def __reduce__(self) -> tuple:
        # errors cross process boundaries (DaskRuntime's workers): rebuild from args and attributes,
        # since subclasses' __init__ signatures differ from their args
        return _restore_error, (type(self), self.args, dict(self.__dict__))


class ValidationError(DataFlowError, ValueError):
    """Bad input: an unknown field, a wrong type, an unsafe request."""


class NodeNotFoundError(DataFlowError, LookupError):
    """A node type name that no live DataFlow defines (or that several do)."""


class NotFoundError(DataFlowError, LookupError):
    """A row that a Read, Update or Delete asked for does not exist."""

    def __init__(self, message: str, *, model: str, id: object, hint: str | None = None):
        self.model = model
        self.id = id
        super().__init__(message, hint=hint)


class EncryptionError(DataFlowError):
    """A model's encrypted fields cannot be written or read as asked (no key, a path that does not encrypt)."""


class DecryptionError(EncryptionError):
    """A stored value did not decrypt: a wrong key, or a ciphertext moved to another row or column."""

    def __init__(self, message: str, *, model: str, field: str, id: object, hint: str | None = None):
        self.model = model
        self.field = field
        self.id = id
        super().__init__(message, hint=hint)


class ConcurrencyError(DataFlowError):
    """An Update of a versioned model expected a version the row no longer has; nothing changed."""

    def __init__(
        self, message: str, *, model: str, id: object, expected: int, actual: int, hint: str | None = None
    ):
        self.model = model
        self.id = id
        self.expected = expected
        self.actual = actual
        super().__init__(message, hint=hint)


class TenantRequiredError(ValidationError):
    """A node of a multi_tenant model ran with no tenant set."""


class AccessDeniedError(DataFlowError, PermissionError):
    """A user's roles lack a grant a node needs (``db.grant``); ``denials`` lists each one."""

    def __init__(self, message: str, *, denials: list[str], hint: str | None = None):
        self.denials = list(denials)
        super().__init__(message, hint=hint)


class WorkflowValidationError(ValidationError):
    """``build()`` found problems; ``problems`` lists every one of them (bad input, so a ValidationError)."""

    def __init__(self, problems: Iterable[str]):
        self.problems = list(problems)
        listing = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(
            f"The workflow has {len(self.problems)} problem(s):\n{listing}",
            hint="fix each listed problem, then call build() again.",
        )


class UnknownNodeTypeError(WorkflowValidationError, NodeNotFoundError):
    """``build()`` found problems, among them a node type that no DataFlow in scope defines."""


class TransactionError(DataFlowError):
    """A transaction could not begin, commit or roll back."""


class MigrationError(DataFlowError):
    """A schema change that dataflow_lab will not apply by itself."""


class DestructiveMigrationError(MigrationError):
    """A migration would drop or narrow data and was not confirmed; ``sql`` is what it would run."""

    def __init__(self, message: str, *, sql: list[str], hint: str | None = None):
        self.sql = list(sql)
        super().__init__(message, hint=hint)


class MigrationRequiredError(MigrationError):
    """The models and the database differ, and this environment does not migrate by itself."""


class BackfillRequiredError(MigrationError):
    """A migration adds required column(s) to a table with rows and no value to give those rows.

    ``model``, ``table``, ``columns`` and ``rows`` (how many rows need a value) say which; proceed
    with ``db.migrations.apply(backfill={column: value})``.
    """

    def __init__(self, message: str, *, model: str, table: str, columns: list[str], rows: int,
                 hint: str | None = None):  # fmt: skip
        self.model, self.table, self.columns, self.rows = model, table, list(columns), rows
        super().__init__(message, hint=hint)


class ConnectionError(DataFlowError):  # noqa: A001 - deliberate, namespaced by the package
    """The database could not be reached or refused the connection."""


_POOL_FIGURES = ("size", "overflow", "checked_out", "timeout")


class PoolExhaustedError(DataFlowError):
    """No pooled connection came free within ``pool_timeout``: the database is up, the pool is full.

    ``size``, ``overflow`` (``max_overflow``), ``checked_out`` and ``timeout`` say how full it was.
    """

    def __init__(self, message: str, *, size: int, overflow: int, checked_out: int, timeout: float,
                 hint: str | None = None):  # fmt: skip
        self.size, self.overflow, self.checked_out, self.timeout = size, overflow, checked_out, timeout
        super().__init__(message, hint=hint)


class RunTimeoutError(DataFlowError):
    """A run passed its ``timeout``: it was cancelled, rolled back or compensated as its mode says.

    ``node_id`` is the node that was running (None between nodes), ``limit`` the limit in seconds.
    Never retried. Not a builtin ``TimeoutError`` on purpose: that is also
    ``concurrent.futures.TimeoutError``, which ``future.result(timeout)`` raises when the *wait*
    times out, so a caller waiting on a run could not tell the two apart.
    """

    def __init__(self, message: str, *, node_id: str | None, limit: float, hint: str | None = None):
        self.node_id, self.limit = node_id, limit
        super().__init__(message, hint=hint)


class NodeTimeoutError(RunTimeoutError):
    """A node passed its ``node_timeout`` (the runtime's, or its own from ``add_node(timeout=)``)."""


class NodeExecutionError(DataFlowError):
    """A node failed while the workflow ran. Names the node id and type.

    When the cause is itself a DataFlowError (say NotFoundError), the raised
    object is also an instance of the cause's class, so either can be caught.
    """

    def __init__(self, node_id: str, node_type: str, cause: BaseException):
        self.node_id = node_id
        self.node_type = node_type
        self.cause = cause
        cause_text = str(cause) or type(cause).__name__
        hint = getattr(cause, "hint", None)
        if hint:
            cause_text = getattr(cause, "message", cause_text)
        DataFlowError.__init__(
            self,
            f"Node '{node_id}' ({node_type}) failed: {type(cause).__name__}: {cause_text}",
            hint=hint,
        )
        for attr in (
            "model",
            "id",
            "field",
            "problems",
            "expected",
            "actual",
            "denials",
            "limit",
            *_POOL_FIGURES,
        ):
            if hasattr(cause, attr):
                setattr(self, attr, getattr(cause, attr))

    def __reduce__(self) -> tuple:
        state = dict(self.__dict__)
        return _restore_node_error, (self.node_id, self.node_type, self.cause, self.args, state)

    @classmethod
    def wrap(cls, node_id: str, node_type: str, cause: BaseException) -> NodeExecutionError:
        """Build the error, mixing in the cause's class when it is ours."""
        if isinstance(cause, DataFlowError) and not isinstance(cause, NodeExecutionError):
            combined = _combined_class(type(cause))
            error = combined.__new__(combined)
            NodeExecutionError.__init__(error, node_id, node_type, cause)
            return error
        return cls(node_id, node_type, cause)


class CycleNotConvergedError(DataFlowError):
    """A declared cycle ran ``max_iterations`` times without its convergence condition holding.

    ``nodes`` are the cycle's node ids, ``iterations`` how many ran, ``last_outputs``
    each cycle node's output in the last iteration, and ``results`` the run's results so far
    (a RunResults: ``results.iterations`` holds every iteration's outputs).
    """

    def __init__(self, nodes: tuple[str, ...], iterations: int, last_outputs: dict, results: dict):
        self.nodes = tuple(nodes)
        self.iterations = iterations
        self.last_outputs = last_outputs
        self.results = results
        super().__init__(
            f"The cycle {' -> '.join(self.nodes)} did not converge in {iterations} iteration(s); "
            f"the last output of '{self.nodes[-1]}' was {last_outputs.get(self.nodes[-1])!r:.80}.",
            hint="raise max_iterations, or check the converge_when condition against these outputs "
            "(error.last_outputs).",
        )


def _restore_error(cls: type[BaseException], args: tuple, state: dict) -> BaseException:
    error = cls.__new__(cls)
    Exception.__init__(error, *args)
    error.__dict__.update(state)
    return error


def _restore_node_error(
    node_id: str, node_type: str, cause: BaseException, args: tuple, state: dict
) -> BaseException:
    error = NodeExecutionError.wrap(node_id, node_type, cause)
    error.__dict__.update(state)
    error.args = args  # the message as raised (the runtime may have scrubbed it)
    return error


_COMBINED: dict[type, type[NodeExecutionError]] = {}


def _combined_class(cause_cls: type) -> type[NodeExecutionError]:
    combined = _COMBINED.get(cause_cls)
    if combined is None:
        combined = type(
            f"NodeExecutionError[{cause_cls.__name__}]",
            (NodeExecutionError, cause_cls),
            {"__init__": NodeExecutionError.__init__, "__module__": __name__},
        )
        _COMBINED[cause_cls] = combined
    return combined
