"""Encryption at rest: how a field is marked, the keys, and the cipher (AES-256-GCM).

A field is encrypted when it is annotated ``Encrypted[str]`` (``dict``, ``bytes``; add
``"searchable"`` for equality filters), named in ``__dataflow__ = {"encrypted": [...]}``, or
when ``DataFlow(encryption_at_rest=True)`` encrypts every text, JSON and bytes field.

Keys come from ``DataFlow(encryption_keys=...)`` (a keyring string, a dict, or a callable that
returns one: a KMS plugs in there) or ``DATAFLOW_ENCRYPTION_KEY``: one base64 key, or a keyring
``id:key,id:key`` whose last entry is current. ``python -m dataflow_lab keygen`` makes one.

Each value is sealed by ``cryptography``'s AESGCM with a fresh random 96-bit nonce; the
associated data binds the table, the column and the row id, so a ciphertext copied to another
row or column does not decrypt. The stored form is text (every backend stores it, COPY and
Arrow included): ``dfe1:`` then base64 of a version byte, the key id's length and bytes, the
nonce and the ciphertext with its tag. A searchable field also keeps a blind index: an
HMAC-SHA256 of the value under a key derived from the current key, in a column of its own; a
filter asks for it under every key of the ring, so rows written before a new key still match.
``db.rotate_key(id)`` re-encrypts (and re-indexes) the stored values under one key.

``cryptography`` is imported when a key is first used, never by ``import dataflow_lab``. The
cipher itself (``Cipher``, ``derive_key``) is in cipher.py, loaded with the first encrypted model.
"""

from __future__ import annotations

import base64
import binascii
import itertools
import os
import secrets
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import EncryptionError

__all__ = ["ENV_KEY", "PREFIX", "Encrypted", "Marked", "Packed", "keygen", "load_keys", "marked", "random_id",
           "random_ids"]  # fmt: skip

ENV_KEY = "DATAFLOW_ENCRYPTION_KEY"
PREFIX = "dfe1:"  # every stored ciphertext starts with it (a plaintext left in the column does not)
VERSION = 1
NONCE = 12  # bytes: 96 bits, AES-GCM's own size
HOW_TO_MAKE_A_KEY = (
    f"make one with `python -m dataflow_lab keygen` and set it as {ENV_KEY}, "
    "or pass DataFlow(encryption_keys=...)"
)
ENCRYPTABLE = ("text", "json", "bytes")  # the logical types a field encrypted at rest may have


class Marked(NamedTuple):
    """The mark ``Encrypted[T]`` puts on an annotation (``Annotated[T, Marked(searchable)]``)."""

    searchable: bool = False


class Encrypted:
    """``ssn: Encrypted[str]``, ``notes: Encrypted[dict]``, ``Encrypted[str, "searchable"]``."""

    def __class_getitem__(cls, item: Any) -> Any:
        inner, *flags = item if isinstance(item, tuple) else (item,)
        unknown = [f for f in flags if f != "searchable"]
        if unknown:
            raise TypeError(f"Encrypted[...] takes a type and optionally 'searchable', not {unknown[0]!r}")
        return typing.Annotated[inner, Marked(searchable=bool(flags))]


class Packed(Sequence[str]):
    """A column of ciphertexts before base64 (``Cipher.seal_packed``), for a columnar bulk path to
    finish in SQL: DuckDB's stores ``PREFIX || to_base64(sealed value)`` (dialects/arrow_columns.py),
    in C++, where Python would make two objects a value.

    ``data``: the sealed values end to end, each the version byte and key id, the nonce, the
    ciphertext and its tag; value i ends at ``ends[i]`` (a numpy array). Read as a sequence, it is
    the stored form as str, made when first asked: byte for byte what ``seal_many`` makes."""

    __slots__ = ("_values", "data", "ends")

    def __init__(self, data: bytes, ends: Any):
        self.data, self.ends = data, ends
        self._values: list[str] | None = None

    def __len__(self) -> int:
        return len(self.ends)

    def __getitem__(self, index: Any) -> Any:
        return self.values()[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.values())

    def values(self) -> list[str]:
        if self._values is None:
            data, b2a = self.data, binascii.b2a_base64
            bounds = itertools.pairwise([0, *self.ends.tolist()])
            self._values = [PREFIX + b2a(data[start:end], newline=False).decode() for start, end in bounds]
        return self._values

    def __repr__(self) -> str:
        return f"<{len(self)} ciphertexts, {len(self.data)} bytes before base64>"


def marked(annotation: object) -> Marked | None:
    """The ``Encrypted`` mark of an annotation (also inside Optional[...]); None: not marked."""
    if typing.get_origin(annotation) is typing.Annotated:
        return next((m for m in typing.get_args(annotation)[1:] if isinstance(m, Marked)), None)
    for arg in typing.get_args(annotation):  # Optional[Encrypted[str]]
        found = marked(arg)
        if found is not None:
            return found
    return None


def _fresh_ids() -> Iterator[int]:
    return itertools.count(secrets.randbelow(2**62) + 1)


_IDS = _fresh_ids()
os.register_at_fork(after_in_child=lambda: globals().update(_IDS=_fresh_ids()))  # a child counts apart


def random_id() -> int:
    """An integer row id made before the INSERT, so a row's ciphertexts can bind it.

    Each process counts up from a random start in 1 .. 2**62 (a forked child from its own): ids
    stay in insertion order, which B-tree inserts need to stay fast, and two processes' ranges
    overlap with a chance of about 2n / 2**63 for n rows (a unique-key error, never an overwrite).
    """
    return next(_IDS)


def random_ids(n: int) -> list[int]:
    """``n`` of ``random_id``, taken in one C-level pass (BulkCreate makes a chunk's at once)."""
    return list(itertools.islice(_IDS, n))


def keygen(key_id: str = "k1") -> str:
    """A new keyring entry, ``id:key`` (32 random bytes, base64)."""
    return f"{key_id}:{base64.b64encode(os.urandom(32)).decode()}"


# -- keys ---------------------------------------------------------------------------------------
def load_keys(given: Any) -> dict[str, bytes] | None:
    """The keyring (id -> 32-byte key, current last) from ``given`` or the environment; None: no key."""
    if callable(given):
        given = given()
    if given is None:
        given = os.environ.get(ENV_KEY) or None
    if given is None:
        return None
    if isinstance(given, bytes):
        given = {"default": given}
    if isinstance(given, str):
        given = _parse_keyring(given)
    if not isinstance(given, Mapping) or not given:
        raise EncryptionError(
            f"encryption_keys must be a keyring string, a dict of id -> key, or a callable returning one; "
            f"got {type(given).__name__}.",
            hint=HOW_TO_MAKE_A_KEY + ".",
        )
    return {str(k): _key_bytes(str(k), v) for k, v in given.items()}


def _parse_keyring(text: str) -> dict[str, str]:
    entries = [e.strip() for e in text.split(",") if e.strip()]
    if len(entries) == 1 and ":" not in entries[0]:
        return {"default": entries[0]}
    ring = {}
    for entry in entries:
        key_id, sep, key = entry.partition(":")
        if not sep or not key_id:
            raise EncryptionError(
                f"{ENV_KEY}: the keyring entry {key_id[:8]!r}... is not `id:key`.",
                hint="write one base64 key, or id:key,id:key (the last is current); "
                + HOW_TO_MAKE_A_KEY
                + ".",
            )
        ring[key_id] = key
    return ring


def _key_bytes(key_id: str, value: Any) -> bytes:
    if isinstance(value, str):
        try:
            value = base64.b64decode(value.strip() + "=" * (-len(value.strip()) % 4), altchars=b"-_")
        except (binascii.Error, ValueError):
            value = b""
    if not isinstance(value, bytes) or len(value) != 32 or len(key_id.encode()) > 255:
        raise EncryptionError(
            f"Encryption key '{key_id}' is not 32 bytes of base64 (AES-256 needs a 256-bit key).",
            hint=HOW_TO_MAKE_A_KEY + ".",
        )
    return value


KeySource = Callable[[], Any] | Mapping[str, Any] | str | bytes | None
