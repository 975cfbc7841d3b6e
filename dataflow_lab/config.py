"""Configuration: environment detection, presets, and URL handling.

``DATAFLOW_ENV`` (development | testing | staging | production; dev, test, prod) picks a
preset; explicit keyword arguments to ``DataFlow(...)`` override any preset value. The
spec's keyword names (``database=``, ``connection_pool_size=``...) are aliases of ours
(``SPEC_ALIASES``); ``safety_level`` names the checks and confirmations of ``SAFETY_LEVELS``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus

from ._record import Record
from .errors import ValidationError, did_you_mean, refuse_unknown_options
from .result_cache import CacheSettings

ENVIRONMENTS = ("development", "testing", "staging", "production")
ENVIRONMENT_ALIASES = {"dev": "development", "test": "testing", "prod": "production"}

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
        safety_level="development",
        min_connections=1,
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
        safety_level="testing",
        min_connections=5,
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
        safety_level="maximum",
        min_connections=25,
        slow_query_threshold=1.0,
        lock_wait_threshold=5.0,
        run_history=1000,
        memory_tracking="rss",
    ),
}
# staging: production's settings (monitoring on, auto_migrate off, maximum safety), a smaller pool
# (min_connections: production's 25, capped by the smaller pool)
PRESETS["staging"] = {**PRESETS["production"], "pool_size": 20, "max_overflow": 40, "monitoring": True,
                       "auto_migrate": False, "min_connections": 20}  # fmt: skip
PRESETS = {env: PRESETS[env] for env in ENVIRONMENTS}  # in ENVIRONMENTS' order

# The spec's keyword names ("Developer vs Production Differences") -> ours
SPEC_ALIASES = {
    "database": "database_url",
    "connection_pool_size": "pool_size",
    "audit_logging": "audit_log",
    "deterministic_ids": "deterministic",
}

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


class SafetyLevel(Record):
    """What one ``safety_level`` requires before a risky operation runs (README: "Safety levels").

    - ``every_row_writes``: a BulkUpdate / BulkDelete with an empty filter needs ``confirmed=True``
      ("confirmed"), or is refused whatever it says ("refused").
    - ``destructive_migrations``: drops and narrowing need ``confirm_destructive=True``
      ("confirmed"), or run only from reviewed files, ``apply(directory=...)`` ("files").
    - ``warnings_are_errors``: what dataflow_lab would warn about (a table ``reflect()`` skips)
      raises instead.
    """

    __slots__ = ("name", "every_row_writes", "destructive_migrations", "warnings_are_errors")
    name: str
    every_row_writes: str
    destructive_migrations: str
    warnings_are_errors: bool

    def __init__(
        self, name: str, every_row_writes: str, destructive_migrations: str, warnings_are_errors: bool
    ):
        self._fill(name, every_row_writes, destructive_migrations, warnings_are_errors)


SAFETY_LEVELS = {
    "development": SafetyLevel("development", "confirmed", "confirmed", warnings_are_errors=False),
    "testing": SafetyLevel("testing", "confirmed", "confirmed", warnings_are_errors=True),
    "maximum": SafetyLevel("maximum", "refused", "files", warnings_are_errors=True),
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
    safety_level: str = "development"  # which checks and confirmations risky operations need: SAFETY_LEVELS
    audit_log: bool = False  # every model's writes are audited (a model's own __dataflow__ may say False)
    multi_tenant: bool = False  # every model is multi_tenant (likewise)
    encryption_at_rest: bool = False  # every text, JSON and bytes field is encrypted (encryption.py)
    log_level: str | None = None  # the 'dataflow_lab' logger's level; None leaves logging alone
    bulk_memory_mb: float = 64.0  # what one bulk chunk may hold in memory (rows.ChunkSizer)
    cache: CacheSettings | None = None  # the result cache of Read, List and Count (result_cache.py)

    @property
    def safety(self) -> SafetyLevel:
        return SAFETY_LEVELS[self.safety_level]

    @property
    def model_defaults(self) -> dict[str, bool]:
        """The model options every model of this DataFlow gets unless it says otherwise."""
        return {"audit_log": self.audit_log, "multi_tenant": self.multi_tenant}

    min_connections: int = 1  # opened in the background at first use, kept by the probes (<= pool_size)
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
        environment = _environment(options.pop("environment", None) or os.environ.get("DATAFLOW_ENV"))
        if database_url is not None:
            options = {"database_url": database_url, **options}
        options = _unalias(options)
        known = {f.name for f in dataclasses.fields(cls)} - {"environment"}
        refuse_unknown_options("DataFlow", options, known | set(SPEC_ALIASES))
        url = options.pop("database_url", None) or os.environ.get("DATABASE_URL") or "sqlite:///:memory:"
        values: dict[str, Any] = {**PRESETS[environment], **options}
        _check_interval(values.get("health_check_interval"))
        values["safety_level"] = _choice("safety_level", values["safety_level"], tuple(SAFETY_LEVELS))
        if values.get("log_level") is not None:
            values["log_level"] = _choice("log_level", str(values["log_level"]).upper(), LOG_LEVELS)
        _check_budget(values.get("bulk_memory_mb", 64.0))
        values["min_connections"] = _min_connections(
            values.get("min_connections", 1), values.get("pool_size")
        )
        _check_thresholds(values)
        values["cache"] = cache_settings(values.get("cache"))
        return cls(database_url=str(url), environment=environment, **values)


def _environment(given: object) -> str:
    environment = str(given or "development").strip().lower()
    environment = ENVIRONMENT_ALIASES.get(environment, environment)
    if environment not in ENVIRONMENTS:
        names = (*ENVIRONMENTS, *ENVIRONMENT_ALIASES)
        raise ValidationError(
            f"Unknown DATAFLOW_ENV '{environment}'.{did_you_mean(environment, names)}",
            hint=f"use one of {', '.join(ENVIRONMENTS)} (or {', '.join(ENVIRONMENT_ALIASES)}; "
            "unset means development).",
        )
    return environment


def _unalias(options: dict[str, object]) -> dict[str, object]:
    """The spec's keyword names as ours; an alias given with our name for the same setting is refused."""
    result = dict(options)
    for alias, ours in SPEC_ALIASES.items():
        if alias not in result:
            continue
        if ours in result:
            raise ValidationError(
                f"DataFlow() was given both {alias}= and {ours}=, which name the same setting.",
                hint=f"keep one ({alias} is the spec's name for {ours}).",
            )
        result[ours] = result.pop(alias)
    return result


def _choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value in choices:
        return str(value)
    raise ValidationError(
        f"DataFlow({name}={value!r}): not one of {', '.join(choices)}.{did_you_mean(str(value), choices)}",
        hint=f"e.g. DataFlow({name}={choices[0]!r}).",
    )


def _check_interval(value: object) -> None:
    if value is None or (isinstance(value, int | float) and not isinstance(value, bool) and value > 0):
        return
    raise ValidationError(
        f"health_check_interval must be a positive number of seconds or None, got {value!r}.",
        hint="e.g. DataFlow(health_check_interval=60), or None to turn background probes off.",
    )


def _check_budget(value: object) -> None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return
    raise ValidationError(
        f"bulk_memory_mb must be a positive number of megabytes, got {value!r}.",
        hint="e.g. DataFlow(bulk_memory_mb=64): bulk chunks hold about that much at once.",
    )


def _min_connections(value: object, pool_size: object) -> int:
    """``min_connections``, capped by ``pool_size`` (a pool keeps no more idle than that)."""
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValidationError(
            f"min_connections must be a whole number of connections, 0 or more, got {value!r}.",
            hint="e.g. DataFlow(min_connections=5); 0 opens none ahead of use.",
        )
    return min(value, pool_size) if isinstance(pool_size, int) and not isinstance(pool_size, bool) else value


def cache_settings(value: object) -> CacheSettings | None:
    """``DataFlow(cache=...)``: False/None (off), True (the defaults) or
    {"max_entries": n, "ttl": s, "sole_writer": bool}."""
    if value is None or value is False:
        return None
    if value is True:
        return CacheSettings()
    if isinstance(value, CacheSettings):
        return value
    hint = 'e.g. DataFlow(cache=True) or DataFlow(cache={"max_entries": 10_000, "ttl": None}).'
    if not isinstance(value, dict):
        raise ValidationError(f"DataFlow(cache={value!r}): must be True, False or a dict.", hint=hint)
    known = ("max_entries", "ttl", "sole_writer")
    unknown = sorted(set(value) - set(known))
    if unknown:
        raise ValidationError(
            f"DataFlow(cache=...): unknown setting '{unknown[0]}'.{did_you_mean(unknown[0], known)}",
            hint=hint,
        )
    most, ttl = value.get("max_entries", 10_000), value.get("ttl")
    if isinstance(most, bool) or not isinstance(most, int) or most < 1:
        raise ValidationError(
            f"DataFlow(cache=...): max_entries must be a positive int, got {most!r}.", hint=hint
        )
    if ttl is not None and (isinstance(ttl, bool) or not isinstance(ttl, int | float) or ttl <= 0):
        raise ValidationError(
            f"DataFlow(cache=...): ttl must be a positive number of seconds or None, got {ttl!r}.", hint=hint
        )
    sole_writer = value.get("sole_writer", False)
    if not isinstance(sole_writer, bool):
        raise ValidationError(f"DataFlow(cache=...): sole_writer must be True or False, got {sole_writer!r}.",
                              hint=hint)  # fmt: skip
    return CacheSettings(max_entries=most, ttl=None if ttl is None else float(ttl), sole_writer=sole_writer)


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
