"""A failed connect said in one line: where it went (host, port, database) and what was wrong.

The driver's own text is long (SQLAlchemy wraps it and appends a "Background on this
error at" link) and rarely says which part of the URL to fix. These helpers name it.
The password is never shown: only the user, host, port and database are read from the URL.
"""

from __future__ import annotations

import socket
from typing import Any

import sqlalchemy as sa


def root_cause(exc: BaseException) -> BaseException:
    """The driver's exception under SQLAlchemy's wrapper (``.orig``) and any ``__cause__``."""
    seen = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "orig", None) or exc.__cause__
        if not isinstance(inner, BaseException):
            break
        exc = inner
    return exc


def first_line(text: str) -> str:
    """Text without SQLAlchemy's "(module.Error) " prefix and "Background on this error" line."""
    lines = [line for line in text.splitlines() if line.strip() and "sqlalche.me" not in line]
    line = lines[0] if lines else text
    if line.startswith("(") and ") " in line:
        line = line.split(") ", 1)[1]
    return line.strip()


def postgres_failure(exc: BaseException, url: str) -> tuple[str, str]:
    """(message, hint) for a failed PostgreSQL connect; says whether host, port or database is wrong."""
    parts = sa.engine.make_url(url)
    query = {k: v if isinstance(v, str) else v[-1] for k, v in parts.query.items()}
    host = parts.host or query.get("host") or "localhost"  # ?host=/run/postgresql: a socket directory
    port, database = parts.port or query.get("port") or 5432, parts.database or parts.username
    where = f"PostgreSQL at {host}:{port}, database '{database}'"
    cause = root_cause(exc)
    kind = type(cause).__name__
    if "rejected SSL upgrade" in str(cause):
        mode = query.get("sslmode")
        return (
            f"Could not connect to {where}: the server does not accept SSL, and the URL asks for "
            f"sslmode={mode}.",
            "use ?sslmode=prefer (SSL when the server has it) or ?sslmode=disable, "
            "or turn ssl on in the server's postgresql.conf.",
        )
    if kind == "TargetServerAttributeNotMatched":
        attrs = query.get("target_session_attrs")
        return (
            f"Could not connect to {where}: the server is not what target_session_attrs={attrs} asks for.",
            "list a server that is (host=a:5432&host=b:5432), or use target_session_attrs=any.",
        )
    if "unrecognized configuration parameter" in str(cause):
        return (
            f"Could not connect to {where}: the server has no setting named in the URL's options: "
            f"{first_line(str(cause))}.",
            "check the -c name=value settings of ?options= (SHOW ALL lists the server's settings).",
        )
    if isinstance(cause, socket.gaierror):
        return (
            f"Could not connect to {where}: the host '{host}' is unknown.",
            "check the host name in the URL.",
        )
    if isinstance(cause, ConnectionRefusedError) or getattr(cause, "errno", None) == 111:
        return (
            f"Could not connect to {where}: nothing accepts connections on port {port} of {host}.",
            "check the port in the URL and that the server is running.",
        )
    if kind == "InvalidCatalogNameError":
        return (
            f"Could not connect to {where}: the database '{database}' does not exist on {host}:{port}.",
            f'check the database name in the URL, or create it (CREATE DATABASE "{database}").',
        )
    if kind in ("InvalidPasswordError", "InvalidAuthorizationSpecificationError"):
        return (
            f"Could not connect to {where}: the server refused user '{parts.username}' "
            "(host, port and database are right; the user or password is wrong).",
            "check the user and password in the URL.",
        )
    if isinstance(cause, (TimeoutError, OSError)):
        return (
            f"Could not connect to {where}: {first_line(str(cause)) or kind}.",
            "check the host and port in the URL and that the server is running.",
        )
    return f"Could not connect to {where}: {first_line(str(cause)) or kind}.", "check the URL."


def generic_failure(exc: BaseException, shown_url: str) -> tuple[str, str]:
    cause: Any = root_cause(exc)
    text = first_line(str(cause)) or type(cause).__name__
    return (
        f"Could not connect to {shown_url}: {text}",
        "check that the database server is running and the URL is right.",
    )
