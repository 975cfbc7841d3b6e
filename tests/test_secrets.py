"""A password is never shown, whatever characters it has (issue 13, item 12).

Passwords of every printable character, written raw (where the URL grammar allows it) and
percent-encoded, in the user:password part and as ``?sslpassword=``; each place a URL shows up.
"""

from __future__ import annotations

import string
import traceback
from urllib.parse import quote_plus

import pytest

from dataflow_lab import DataFlow, DataFlowError
from dataflow_lab.config import redact_url, scrub
from dataflow_lab.runtime import LocalRuntime
from dataflow_lab.workflow import WorkflowBuilder


def _urls(char: str) -> list[tuple[str, str]]:
    secret = f"pw{char}x{char}9"
    urls = [(secret, f"postgresql://app:{quote_plus(secret)}@127.0.0.1:1/db")]
    urls.append((secret, f"postgresql://app@127.0.0.1:1/db?sslpassword={quote_plus(secret)}&sslmode=require"))
    if char != "@":  # a raw @ ends the password in SQLAlchemy's grammar: it must be encoded
        urls.append((secret, f"postgresql://app:{secret}@127.0.0.1:1/db"))
    if char not in "&@":  # a raw & starts the next parameter; a raw @ is read as user@host
        urls.append((secret, f"postgresql://app@127.0.0.1:1/db?sslmode=require&sslpassword={secret}"))
    return urls


CASES = [case for char in string.printable for case in _urls(char)]


def _places(db: DataFlow) -> dict[str, str]:
    places = {"repr": repr(db), "str": str(db), "url": db.url, "config": repr(db.config)}
    places["metrics_text"] = db.metrics_text()
    places["metrics_json"] = db.metrics_json()
    places["dashboard"] = repr(db.metrics())
    places["collector"] = repr(db._monitor)
    from dataflow_lab.notebook.catalogue import Catalogue

    places["catalogue_html"] = Catalogue(db).html()
    return places


def _connection_error(db: DataFlow) -> str:
    @db.model
    class Note:
        text: str

    workflow = WorkflowBuilder()
    workflow.add_node("NoteCreateNode", "c", {"text": "hi"})
    with pytest.raises(DataFlowError) as info:
        LocalRuntime().execute(workflow.build())
    return "".join(traceback.format_exception(info.value)) + repr(info.value.args)


def _forms(secret: str) -> set[str]:
    return {secret, quote_plus(secret)}


@pytest.mark.parametrize("secret,url", CASES, ids=[repr(u) for _, u in CASES])
def test_a_password_of_any_printable_character_is_shown_nowhere(secret, url):
    db = DataFlow(url, monitoring=True)
    try:
        places = _places(db)
        places["connection_error"] = _connection_error(db)
        db.close()
        places["repr_closed"] = repr(db)
        for place, text in places.items():
            for form in _forms(secret):
                assert form not in text, f"{form!r} leaks in {place}: {text[:300]}"
        assert "127.0.0.1:1" in places["url"] and "***" in places["url"]
    finally:
        db.close()


@pytest.mark.parametrize("char", list(string.printable))
def test_redaction_follows_the_url_grammar_and_keeps_the_rest(char):
    secret = f"pw{char}x{char}9"
    url = f"postgresql://app:{quote_plus(secret)}@127.0.0.1:5432/db?sslpassword={quote_plus(secret)}&sslmode=require"
    assert redact_url(url) == "postgresql://app:***@127.0.0.1:5432/db?sslpassword=***&sslmode=require"
    assert secret not in scrub(f"auth failed for password {secret!s} at {url}", url)


def test_urls_without_secrets_are_unchanged():
    for url in ("sqlite:///:memory:", "duckdb:///tmp/x.duckdb", "postgresql://app@h:1/db?sslmode=require"):
        assert redact_url(url) == url
