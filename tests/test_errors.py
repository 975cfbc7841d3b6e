"""errors.py: suggestions for misspelled names, and the refusal of unknown options."""

from __future__ import annotations

import pytest

from dataflow_lab import ValidationError
from dataflow_lab.errors import closest, did_you_mean, refuse_unknown_options


@pytest.mark.parametrize(
    ("typed", "meant"),
    [
        ("craete", "create"),  # two neighbours swapped
        ("nme", "name"),
        ("idd", "id"),
        ("rn", "run"),
        ("create_usr", "create_user"),
        ("UserCreat", "UserCreateNode"),  # most of its start
        ("retries", "retry"),
        ("TRANSACTION", "transaction"),
    ],
)
def test_a_misspelled_name_suggests_what_was_meant(typed, meant):
    assert closest(typed, [meant, "read_user", "zz"]) == meant


def test_a_name_like_no_candidate_suggests_nothing():
    # difflib's ratio finds 'read_user' close to 'create_usr' (0.74); it is not what anyone meant
    assert closest("create_usr", ["read_user", "list_users"]) is None
    assert did_you_mean("create_usr", ["read_user", "list_users"]) == ""
    assert closest("x", ["y"]) is None
    assert closest("user_id", ["user_name"]) is None


def test_the_closest_of_several_candidates_wins():
    assert closest("create_usr", ["read_user", "create_user", "create"]) == "create_user"


def test_an_unknown_option_is_refused_with_a_suggestion_and_the_known_options():
    with pytest.raises(ValidationError) as info:
        refuse_unknown_options("Thing", {"colour": 1}, ["color", "size"])
    assert str(info.value) == (
        "Unknown Thing option 'colour'. Did you mean 'color'? Hint: known options: color, size."
    )
    refuse_unknown_options("Thing", {"size": 1}, ["color", "size"])  # known: nothing raised
