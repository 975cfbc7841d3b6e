"""The current tenant, for models with ``__dataflow__ = {"multi_tenant": True}``.

``with db.tenant("acme"):`` sets it for one DataFlow; ``runtime.execute(...,
tenant="acme")`` for every DataFlow of one run. Runs happen on the background
loop's thread, where the caller's context variables are not visible, so the
runtime captures the tenants when ``execute`` is called (``captured``) and
sets them again around the run (``run_with``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine, Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType
from typing import Any, Protocol, TypeVar

from .errors import TenantRequiredError, ValidationError

__all__ = ["activated", "captured", "current", "require", "run_with", "tenant_scope"]

T = TypeVar("T")
EVERY_DATAFLOW = None  # the key of a tenant given to runtime.execute(..., tenant=...)
_NONE: Mapping[Any, str] = MappingProxyType({})
_TENANTS: ContextVar[Mapping[Any, str]] = ContextVar("dataflow_lab_tenants", default=_NONE)


def check_tenant(tenant: Any) -> str:
    if not isinstance(tenant, str) or not tenant:
        raise ValidationError(
            f"A tenant must be a non-empty string, got {tenant!r}.",
            hint='write with db.tenant("acme"): ...',
        )
    return tenant


@contextlib.contextmanager
def tenant_scope(dataflow: object, tenant: str) -> Iterator[str]:
    """Within the block, multi_tenant models of ``dataflow`` (None: of every DataFlow) see ``tenant``."""
    tenant = check_tenant(tenant)
    token = _TENANTS.set(MappingProxyType({**_TENANTS.get(), dataflow: tenant}))
    try:
        yield tenant
    finally:
        _TENANTS.reset(token)


def current(dataflow: object) -> str | None:
    """The tenant set for ``dataflow`` (by db.tenant, else by the run), or None."""
    tenants = _TENANTS.get()
    if not tenants:
        return None
    return tenants.get(dataflow) or tenants.get(EVERY_DATAFLOW)


class Named(Protocol):
    """A model, as the refusal names it (a model.ModelSchema; declarations.py imports this module)."""

    @property
    def name(self) -> str: ...


def require(dataflow: object, model: Named, where: str) -> str:
    tenant = current(dataflow)
    if tenant is None:
        raise TenantRequiredError(
            f"{where}: model '{model.name}' is multi_tenant, and no tenant is set.",
            hint='run it inside `with db.tenant("..."):`, or pass tenant="..." to runtime.execute(...).',
        )
    return tenant


def captured(tenant: str | None = None) -> Mapping[Any, str]:
    """The caller's tenants, to carry into a run; an explicit ``tenant`` replaces them for every DataFlow."""
    if tenant is not None:
        return MappingProxyType({EVERY_DATAFLOW: check_tenant(tenant)})
    return _TENANTS.get()


@contextlib.contextmanager
def activated(tenants: Mapping[Any, str]) -> Iterator[None]:
    """Within the block, exactly ``tenants`` are set (as captured by ``captured``)."""
    token = _TENANTS.set(tenants)
    try:
        yield
    finally:
        _TENANTS.reset(token)


def run_with(tenants: Mapping[Any, str], coro: Coroutine[Any, Any, T]) -> Coroutine[Any, Any, T]:
    """``coro``, run with ``tenants`` set (a no-op wrapper-free path when there are none)."""
    return _with(tenants, coro) if tenants else coro


async def _with(tenants: Mapping[Any, str], coro: Coroutine[Any, Any, T]) -> T:
    token = _TENANTS.set(tenants)
    try:
        return await coro
    finally:
        _TENANTS.reset(token)
