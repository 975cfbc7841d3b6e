"""Configuration: environment detection, presets, and URL handling.

``DATAFLOW_ENV`` (development | testing | production) picks a preset; explicit
keyword arguments to ``DataFlow(...)`` override any preset value.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from .errors import ValidationError, did_you_mean, refuse_unknown_options

ENVIRONMENTS = ("development", "testing", "production")

# The spec's last section ("Developer vs Production Differences"), as data; README.md has the table.
PRESETS: dict[str, dict[str, object]] = {
    "development": dict(
        pool_size=5,
        max_overflow=10,
        pool_timeout=30.0,
        pool_recycle=3600,
        pool_pre_ping=False,
        auto_migrate=True,
        echo=True,
        monitoring=False,
        statement_timeout=60.0,
        deterministic=False,
        health_check_interval=60.0,
        slow_query_threshold=1.0,
        lock_wait_threshold=5.0,
        run_history=1000,
        memory_tracking="rss",
    ),
    "testing": dict(
        pool_size=10,
        max_overflow=10,
        pool_timeout=30.0,
        pool_recycle=3600,
        pool_pre_ping=True,
        auto_migrate=True,
        echo=False,
        monitoring=True,
        statement_timeout=60.0,
        deterministic=True,
        health_check_interval=60.0,
        slow_query_threshold=1.0,
        lock_wait_threshold=5.0,
        run_history=1000,
        memory_tracking="rss",
    ),
    "production": dict(
        pool_size=100,
        max_overflow=200,
        pool_timeout=30.0,
        pool_recycle=3600,
        pool_pre_ping=True,
        auto_migrate=False,
        echo=False,
        monitoring=True,
        statement_timeout=30.0,
        deterministic=False,
        health_check_interval=60.0,
        slow_query_threshold=1.0,
        lock_wait_threshold=5.0,
        run_history=1000,
        memory_tracking="rss",
    ),
}


@dataclass(frozen=True)
class DataFlowConfig:
    """Everything a DataFlow instance was configured with (password-free repr)."""

    database_url: str
    environment: str = "development"
    pool_size: int = 5
    max_overflow: int = 10
    pool_timeout: float = 30.0
    pool_recycle: int = 3600
    pool_pre_ping: bool = False
    auto_migrate: bool = True
    echo: bool = False
    monitoring: bool = False
    statement_timeout: float | None = 60.0
    in_doubt_grace: float = 60.0  # seconds before start-up recovery resolves another process's 2PC
    deterministic: bool = False  # timestamps from a SteppingClock (clock.py): reproducible test runs
    existing_schema: bool = False  # reflect the database's tables as models; never issue DDL
    health_check_interval: float | None = (
        60.0  # seconds between background pool probes (health.py); None: off
    )
    run_history: int = 1000  # runs db.runs() keeps (tracking.py); always on
    slow_query_threshold: float | None = 1.0  # seconds: a statement this slow is logged (statement_log.py)
    lock_wait_threshold: float | None = 5.0  # seconds: a lock wait this long is an alert (PostgreSQL)
    memory_tracking: str = "rss"  # per-node memory_usage_mb when monitored: "rss" or "tracemalloc"

    def __repr__(self) -> str:
        fields = ", ".join(
            f"{f.name}={redact_url(getattr(self, f.name)) if f.name == 'database_url' else getattr(self, f.name)!r}"
            for f in dataclasses.fields(self)
        )
        return f"DataFlowConfig({fields})"

    @classmethod
    def from_env(cls, database_url: str | None = None, **options: object) -> DataFlowConfig:
        environment = str(options.pop("environment", None) or os.environ.get("DATAFLOW_ENV") or "development")
        environment = environment.strip().lower()
        if environment not in ENVIRONMENTS:
            raise ValidationError(
                f"Unknown DATAFLOW_ENV '{environment}'.{did_you_mean(environment, ENVIRONMENTS)}",
                hint=f"use one of {', '.join(ENVIRONMENTS)} (unset means development).",
            )
        known = {f.name for f in dataclasses.fields(cls)} - {"database_url", "environment"}
        refuse_unknown_options("DataFlow", options, known)
        url = database_url or os.environ.get("DATABASE_URL") or "sqlite:///:memory:"
        values: dict[str, Any] = {**PRESETS[environment], **options}
        _check_interval(values.get("health_check_interval"))
        _check_thresholds(values)
        return cls(database_url=url, environment=environment, **values)


def _check_interval(value: object) -> None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0):
        return
    raise ValidationError(
        f"health_check_interval must be a positive number of seconds or None, got {value!r}.",
        hint="e.g. DataFlow(health_check_interval=60), or None to turn background probes off.",
    )


MEMORY_TRACKING = ("rss", "tracemalloc")


def _check_thresholds(values: dict[str, Any]) -> None:
    for name in ("slow_query_threshold", "lock_wait_threshold"):
        value = values.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or value <= 0
        ):
            raise ValidationError(
                f"{name} must be a positive number of seconds or None, got {value!r}.",
                hint=f"e.g. DataFlow({name}=2.5), or None to turn it off.",
            )
    tracking = values.get("memory_tracking", "rss")
    if tracking not in MEMORY_TRACKING:
        raise ValidationError(
            f"memory_tracking must be 'rss' or 'tracemalloc', got {tracking!r}.{did_you_mean(str(tracking), MEMORY_TRACKING)}",
            hint="'rss' (the default) reports each node's change in resident memory; 'tracemalloc' starts "
            "tracemalloc and reports the peak a node allocated (precise, but slows Python down).",
        )


_SECRET_WORDS = ("password", "passwd", "pwd", "secret", "token")


def _is_secret_key(key: str) -> bool:
    return any(word in key.lower() for word in _SECRET_WORDS)


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """Where the secrets of a URL are: its password and secret query values (``?sslpassword=``).

    Follows SQLAlchemy's URL grammar (``make_url``, which is what connects): the username is
    ``[^:/]*``, the password runs to the next ``@``, the query starts at the next ``?``.
    """
    scheme, sep, rest = text.partition("://")
    if not sep or not scheme or not all(c.isalnum() or c in "+.-_" for c in scheme):
        return []
    base, spans, after = len(scheme) + 3, [], 0
    user_end = next((i for i, c in enumerate(rest) if c in ":/"), len(rest))
    if rest[user_end : user_end + 1] == ":" and "@" in rest[user_end:]:
        at = rest.index("@", user_end)
        spans.append((base + user_end + 1, base + at))
        after = at + 1
    query = rest.find("?", after)
    if query >= 0:
        pos = base + query + 1
        for pair in rest[query + 1 :].split("&"):
            key, eq, _ = pair.partition("=")
            if eq and _is_secret_key(unquote_plus(key)):
                spans.append((pos + len(key) + 1, pos + len(pair)))
            pos += len(pair) + 1
    return spans


def redact_url(url: object) -> str:
    """Replace the password of a URL (user:pw@host) and secret query values with ***."""
    text = str(url)
    for start, end in reversed(_secret_spans(text)):
        if end > start:
            text = f"{text[:start]}***{text[end:]}"
    return text


def passwords_of(url: str) -> list[str]:
    """Each secret of a URL in every form it may show up in (as written, decoded, re-encoded)."""
    raw = [url[start:end] for start, end in _secret_spans(url)]
    forms = {form for secret in raw for form in (secret, unquote(secret), unquote_plus(secret))}
    forms |= {quote(form, safe="") for form in set(forms)} | {quote_plus(form) for form in set(forms)}
    return sorted((form for form in forms if form and form != "***"), key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """Remove a URL's password from any text (error messages from drivers)."""
    text = text.replace(url, redact_url(url)) if url else text
    text = redact_url(text)
    for password in passwords_of(url):
        text = text.replace(password, "***")
    return text
