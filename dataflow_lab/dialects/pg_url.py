"""PostgreSQL URLs as people write them: libpq's query parameters, translated for asyncpg.

psql, libpq and most tools take ``?sslmode=require&application_name=etl&options=-c%20search_path%3Dapp``;
asyncpg takes none of them as keywords (SQLAlchemy hands it every query parameter, and it
fails with "unexpected keyword argument"). ``check_query`` refuses an unknown or malformed
parameter at ``DataFlow()``, naming it; ``translate`` gives the engine URL's query without
them and what asyncpg takes instead:

====================  ==========================================================================
``sslmode``           asyncpg's ``ssl=`` (disable, allow, prefer, require, verify-ca, verify-full)
``sslrootcert``...    with ``sslcert``, ``sslkey``, ``sslpassword``: an ``ssl.SSLContext`` that
                      verifies with the root certificate (verify-ca, verify-full) and presents
                      the client certificate; asyncpg then requires SSL (prefer acts as require)
``application_name``  a server setting (seen in ``pg_stat_activity``)
``connect_timeout``   asyncpg's ``timeout=`` (seconds; 0 waits forever, as in libpq)
``options``           its ``-c name=value`` / ``--name=value`` pairs become server settings
``schema``            ours: the search_path (``options``' search_path must then agree)
``target_session_attrs``  passed on, checked (any, primary, standby, prefer-standby, read-write, read-only)
``host`` / ``port``   passed on: SQLAlchemy reads them (a ``host`` starting with ``/`` is the
                      directory of the server's unix socket); so are ``user``, ``password``,
                      ``passfile``, ``service``, ``krbsrvname``... (``PASSED_ON``)
====================  ==========================================================================

Nothing here imports SQLAlchemy: the check runs in ``DataFlow()`` before the warm-up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qsl

from ..errors import ValidationError, did_you_mean

__all__ = ["PostgresQuery", "check_query", "query_of", "translate"]

SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
SESSION_ATTRS = ("any", "primary", "standby", "prefer-standby", "read-write", "read-only")
SSL_FILES = ("sslrootcert", "sslcert", "sslkey", "sslpassword")
TRANSLATED = ("sslmode", *SSL_FILES, "application_name", "connect_timeout", "options", "schema")
# asyncpg takes these as they are (prepared_statement_cache_size is SQLAlchemy's)
PASSED_ON = ("host", "port", "user", "password", "passfile", "target_session_attrs", "krbsrvname", "gsslib",
             "service", "servicefile", "prepared_statement_cache_size")  # fmt: skip
KNOWN = (*TRANSLATED, *PASSED_ON)
_SETTING_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


@dataclass(frozen=True)
class PostgresQuery:
    """A URL's query, translated: what asyncpg's ``connect()`` and the server get."""

    server_settings: dict[str, str] = field(default_factory=dict)
    connect_args: dict[str, object] = field(default_factory=dict)  # ssl, timeout


# SQLAlchemy's URL grammar (make_url, which is what connects): user [^:/]*, password up to the next @
_QUERY = re.compile(r"^[\w+.-]+://(?:[^:/]*(?::[^@]*)?@)?[^?]*(?:\?(?P<query>.*))?$", re.DOTALL)


def query_of(url: str) -> dict[str, str]:
    """The URL's query parameters (the last value of a repeated one)."""
    match = _QUERY.match(url)
    return dict(parse_qsl(match["query"] or "", keep_blank_values=True)) if match else {}


def check_query(url: str) -> None:
    """Refuse, at ``DataFlow()``, a query parameter asyncpg would fail on, naming it."""
    translate(query_of(url))


def translate(query: Mapping[str, str]) -> PostgresQuery:
    """The server settings and connect arguments a URL's query asks for (see the module's table)."""
    unknown = sorted(set(query) - set(KNOWN))
    if unknown:
        name = unknown[0]
        raise ValidationError(
            f"The PostgreSQL URL has query parameter '{name}', which dataflow_lab does not know."
            f"{did_you_mean(name, KNOWN)}",
            hint=f"the URL's query may hold {', '.join(KNOWN)}; remove '{name}' "
            "(other server settings go in options=-c%20name%3Dvalue).",
        )
    settings: dict[str, str] = {}
    args: dict[str, object] = {}
    if "options" in query:
        settings.update(_options(query["options"]))
    schema = query.get("schema")
    if schema:
        if settings.get("search_path", schema) != schema:
            raise ValidationError(
                f"The PostgreSQL URL sets the search_path twice: schema={schema} and "
                f"options search_path={settings['search_path']}.",
                hint="keep one of them.",
            )
        settings["search_path"] = schema
    if "application_name" in query:
        settings["application_name"] = query["application_name"]
    if "sslmode" in query:
        args["ssl"] = _choice("sslmode", query["sslmode"], SSLMODES)
    if args.get("ssl") != "disable" and {"sslrootcert", "sslcert"} & set(query):
        args["ssl"] = _ssl_context(str(args.get("ssl", "prefer")), query)
    if "connect_timeout" in query:
        args["timeout"] = _timeout(query["connect_timeout"])
    if "target_session_attrs" in query:
        _choice("target_session_attrs", query["target_session_attrs"], SESSION_ATTRS)
    return PostgresQuery(settings, args)


def _ssl_context(mode: str, query: Mapping[str, str]) -> object:
    """What libpq makes of its certificate files, as an SSLContext for asyncpg."""
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        if mode in ("verify-ca", "verify-full"):
            context.load_verify_locations(cafile=query.get("sslrootcert"))
            context.check_hostname = mode == "verify-full"
        else:  # libpq checks no certificate below verify-ca
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if "sslcert" in query:
            context.load_cert_chain(query["sslcert"], query.get("sslkey"), password=query.get("sslpassword"))
    except (OSError, ValueError, ssl.SSLError) as exc:  # the password is never shown: only the file names
        files = ", ".join(f"{k}={query[k]}" for k in ("sslrootcert", "sslcert", "sslkey") if k in query)
        raise ValidationError(
            f"The PostgreSQL URL's certificate files ({files}) could not be loaded: "
            f"{type(exc).__name__}{': ' + exc.strerror if isinstance(exc, OSError) and exc.strerror else ''}.",
            hint="check that each file exists, is PEM, and that sslpassword opens the key.",
        ) from None
    return context


def _choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValidationError(
            f"The PostgreSQL URL has {name}={value!r}, which is not one of {', '.join(choices)}."
            f"{did_you_mean(value, choices)}",
            hint=f"write ?{name}={choices[0]} or another of those values.",
        )
    return value


def _timeout(value: str) -> float | None:
    try:
        seconds = float(value)
    except ValueError:
        seconds = float("nan")
    if not seconds >= 0:  # also NaN
        raise ValidationError(
            f"The PostgreSQL URL has connect_timeout={value!r}, which is not a number of seconds.",
            hint="write ?connect_timeout=10 (seconds; 0 waits forever).",
        )
    return seconds or None  # libpq: 0 means no limit


def _options(text: str) -> dict[str, str]:
    """libpq's ``options``: ``-c name=value`` / ``-cname=value`` / ``--name=value``, blank-separated
    (a backslash escapes a blank or a backslash), as server settings."""
    words = [re.sub(r"\\(.)", r"\1", w) for w in re.split(r"(?<!\\)\s+", text.strip()) if w]
    settings, i = {}, 0
    while i < len(words):
        word = words[i]
        if word == "-c" and i + 1 < len(words):
            pair, i = words[i + 1], i + 2
        elif word.startswith("-c") and word != "-c":
            pair, i = word[2:], i + 1
        elif word.startswith("--"):
            pair, i = word[2:], i + 1
        else:
            pair, i = "", len(words)
        name, eq, value = pair.partition("=")
        name = name.replace("-", "_")  # the server reads --statement-timeout=5 as statement_timeout
        if not eq or not _SETTING_NAME.match(name):
            raise ValidationError(
                f"The PostgreSQL URL's options={text!r} is not a list of '-c name=value' settings.",
                hint="write options=-c%20search_path%3Dapp (URL-encoded '-c search_path=app'); "
                "several: '-c a=1 -c b=2'.",
            )
        settings[name] = value
    return settings
