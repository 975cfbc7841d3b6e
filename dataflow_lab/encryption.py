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

``cryptography`` is imported when a key is first used, never by ``import dataflow_lab``.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import itertools
import json
import os
import secrets
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple

from .errors import DecryptionError, EncryptionError

__all__ = ["ENV_KEY", "PREFIX", "Cipher", "Encrypted", "Marked", "Packed", "keygen", "load_keys",
           "derive_key", "marked", "random_id", "random_ids"]  # fmt: skip

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


# -- the cipher ---------------------------------------------------------------------------------
def _encode(kind: str, value: Any) -> bytes:
    if kind == "bytes":
        return bytes(value)
    if kind == "json":
        return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()  # keys keep their order
    return str(value).encode()


def _decode(kind: str, data: bytes) -> Any:
    if kind == "bytes":
        return data
    if kind == "json":
        return json.loads(data)
    return data.decode()


class Cipher:
    """Seals and opens the values of one model's encrypted fields (AES-256-GCM, per-key derived keys)."""

    def __init__(self, keys: Mapping[str, bytes], model: str, table: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.model, self.table = model, table
        self.current = list(keys)[-1]
        self._aead = {k: AESGCM(derive_key(v, b"dataflow_lab aes-256-gcm")) for k, v in keys.items()}
        self._index = {k: derive_key(v, b"dataflow_lab blind index") for k, v in keys.items()}
        self._heads = {k: bytes([VERSION, len(k.encode())]) + k.encode() for k in keys}

    @property
    def key_ids(self) -> tuple[str, ...]:
        return tuple(self._aead)

    def _aad(self, column: str, row_id: Any) -> bytes:
        return f"dataflow_lab/{VERSION}\x00{self.table}\x00{column}\x00{row_id}".encode()

    def seal(self, column: str, kind: str, row_id: Any, value: Any, key_id: str | None = None) -> str:
        """``value`` encrypted for ``column`` of row ``row_id``, with the current key (or ``key_id``)."""
        return self.sealer(column, kind, key_id)(row_id, value)

    def sealer(self, column: str, kind: str, key_id: str | None = None) -> Callable[[Any, Any], str]:
        """``seal`` for one column, as a function of (row id, value): BulkCreate's hot loop."""
        encrypt, head, aad = self._parts(column, key_id)
        encode = str.encode if kind == "text" else (lambda v: _encode(kind, v))
        urandom, b64 = os.urandom, base64.b64encode

        def seal(row_id: Any, value: Any) -> str:
            nonce = urandom(NONCE)
            return (
                PREFIX
                + b64(head + nonce + encrypt(nonce, encode(value), aad + str(row_id).encode())).decode()
            )

        return seal

    def _parts(self, column: str, key_id: str | None) -> tuple[Callable[..., bytes], bytes, bytes]:
        """(AES-GCM's encrypt, the head of the stored form, the associated data less the row id)."""
        key_id = key_id or self.current
        return self._aead[key_id].encrypt, self._heads[key_id], self._aad(column, "")

    def seal_many(
        self, column: str, kind: str, row_ids: Sequence[Any], values: Sequence[Any], key_id: str | None = None
    ) -> list[str | None]:
        """``seal`` of each of ``values`` (None stays None) to the row id beside it: BulkCreate's hot loop.

        Each value is still one AES-GCM call with its own nonce (about 0.5 µs, the GIL held:
        cryptography releases it only from 2 KB up), so the rest is kept to C-level passes, a block
        of values at a time: the nonces cut from one ``os.urandom`` call (the same CSPRNG), the
        associated data's prefix made once and an int id appended as bytes, binascii's base64.
        """
        if None in values:  # (a None may be missing from ``values`` only: its id and nonce go unused)
            at = [i for i, v in enumerate(values) if v is not None]
            done = iter(
                self.seal_many(column, kind, [row_ids[i] for i in at], [values[i] for i in at], key_id)
            )
            return [None if v is None else next(done) for v in values]
        seal = functools.partial(_seal_block, *self._parts(column, key_id), kind)
        blocks: list[Any] = [
            seal(row_ids[i : i + BLOCK], values[i : i + BLOCK]) for i in range(0, len(values), BLOCK)
        ]
        return blocks[0] if len(blocks) == 1 else list(itertools.chain.from_iterable(blocks))  # (none: [])

    def seal_packed(
        self, column: str, kind: str, row_ids: Sequence[Any], values: Sequence[Any], key_id: str | None = None
    ) -> Packed | list[str | None]:
        """``seal_many`` as a ``Packed``, base64 left to the database, for a bulk path that takes
        Arrow columns (DuckDB's, where numpy is at hand); a column holding a None is a list."""
        if None in values:
            return self.seal_many(column, kind, row_ids, values, key_id)
        import numpy as np

        seal = functools.partial(_packed_block, np, *self._parts(column, key_id), kind)
        blocks = [seal(row_ids[i : i + BLOCK], values[i : i + BLOCK]) for i in range(0, len(values), BLOCK)]
        lengths = np.concatenate([np.empty(0, np.int64), *(b[1] for b in blocks)])
        return Packed(b"".join(b[0] for b in blocks), np.cumsum(lengths))

    def blind_many(
        self, column: str, kind: str, values: Sequence[Any], key_id: str | None = None
    ) -> list[str | None]:
        """``blind`` of each of ``values`` (None stays None): one keyed HMAC state copied per value."""
        base = hmac.new(
            self._index[key_id or self.current], f"{self.table}\x00{column}\x00".encode(), hashlib.sha256
        )
        out: list[str | None] = []
        for v in values:
            if v is None:
                out.append(None)
                continue
            h = base.copy()
            h.update(v.encode() if kind == "text" else _encode(kind, v))
            out.append(h.hexdigest())
        return out

    @staticmethod
    def key_of(stored: str) -> str | None:
        """The id of the key a stored ciphertext was sealed with (None: not a ciphertext)."""
        try:
            raw = base64.b64decode(stored[len(PREFIX) : len(PREFIX) + 360])  # the head is within it
            return raw[2 : 2 + raw[1]].decode()
        except (binascii.Error, ValueError, IndexError):
            return None

    def open(self, column: str, kind: str, row_id: Any, stored: Any) -> Any:
        where = f"{self.model}.{column} of row {row_id!r}"
        if not isinstance(stored, str) or not stored.startswith(PREFIX):
            raise DecryptionError(
                f"{where} holds a value that is not a dataflow_lab ciphertext (written without encryption?).",
                model=self.model, field=column, id=row_id,
                hint="encrypt the column's existing rows before declaring it encrypted (not supported yet).",
            )  # fmt: skip
        try:
            raw = base64.b64decode(stored[len(PREFIX) :], validate=True)
            version, size = raw[0], raw[1]
            key_id = raw[2 : 2 + size].decode()
            nonce, sealed = raw[2 + size : 2 + size + NONCE], raw[2 + size + NONCE :]
        except (binascii.Error, ValueError, IndexError):
            raise DecryptionError(f"{where} is a damaged ciphertext.", model=self.model, field=column,
                                  id=row_id) from None  # fmt: skip
        aead = self._aead.get(key_id)
        if version != VERSION or aead is None:
            raise DecryptionError(
                f"{where} was encrypted with key '{key_id}' (format {version}), which this DataFlow's "
                f"keyring ({', '.join(self._aead)}) does not hold.",
                model=self.model, field=column, id=row_id,
                hint=f"add the key to {ENV_KEY} (id:key,id:key; the last is current) or to encryption_keys.",
            )  # fmt: skip
        from cryptography.exceptions import InvalidTag

        try:
            return _decode(kind, aead.decrypt(nonce, sealed, self._aad(column, row_id)))
        except InvalidTag:
            raise DecryptionError(
                f"{where} did not decrypt with key '{key_id}': the key is wrong, or the ciphertext was "
                "copied from another row or column.",
                model=self.model, field=column, id=row_id,
                hint="check the encryption key; a value moved between rows or columns cannot be read back.",
            ) from None  # fmt: skip

    def blind(self, column: str, kind: str, value: Any, key_id: str | None = None) -> str:
        """The blind index of ``value`` under the current key (or ``key_id``): equal values of one
        column give equal indexes, nothing more."""
        message = f"{self.table}\x00{column}\x00".encode() + _encode(kind, value)
        return hmac.new(self._index[key_id or self.current], message, hashlib.sha256).hexdigest()

    def blinds(self, column: str, kind: str, value: Any) -> list[str]:
        """``value``'s blind index under every key of the ring: a row indexed before a new key was
        added (and not yet rotated) is still found."""
        return [self.blind(column, kind, value, k) for k in self._index]


BLOCK = 4096  # values sealed per pass of seal_many: its per-value objects stay in the CPU's caches


def _seal_block(
    encrypt: Callable[..., bytes], head: bytes, aad: bytes, kind: str,
    row_ids: Sequence[Any], values: Sequence[Any],
) -> list[str]:  # fmt: skip
    """``Cipher.seal_many`` of one block (no None in ``values``)."""
    pool = os.urandom(NONCE * len(values))
    nonces = [pool[i : i + NONCE] for i in range(0, len(pool), NONCE)]
    plain = map(str.encode, values) if kind == "text" else (_encode(kind, v) for v in values)
    sealed = map(encrypt, nonces, plain, _aads(aad, row_ids))  # the AES-GCM calls, in one C-level loop
    prefix, b2a = PREFIX.encode(), binascii.b2a_base64
    return [(prefix + b2a(head + n + c, newline=False)).decode() for n, c in zip(nonces, sealed, strict=True)]


def _packed_block(
    np: Any, encrypt: Callable[..., bytes], head: bytes, aad: bytes, kind: str,
    row_ids: Sequence[Any], values: Sequence[Any],
) -> tuple[bytes, Any]:  # fmt: skip
    """``Cipher.seal_packed`` of one block: (its values sealed, end to end; their lengths). Python
    makes an object a value only for AES-GCM's arguments and result: numpy cuts the nonces and
    writes the associated data, one join lays out every value's head, nonce and ciphertext."""
    nonces = os.urandom(NONCE * len(values))
    cut = np.frombuffer(nonces, f"V{NONCE}").tolist()  # void records: bytes, nothing stripped
    plain = map(str.encode, values) if kind == "text" else (_encode(kind, v) for v in values)
    sealed = list(map(encrypt, cut, plain, _aads(aad, row_ids, np)))
    laid = [head] * (3 * len(sealed))
    laid[1::3], laid[2::3] = cut, sealed
    return b"".join(laid), np.fromiter(map(len, sealed), np.int64, len(sealed)) + (len(head) + NONCE)


def _aads(aad: bytes, row_ids: Sequence[Any], np: Any = None) -> list[bytes]:
    """The associated data of each row: ``aad`` and the row id's digits. With ``np`` (numpy), ids
    that are ints of one length (a chunk of ``random_ids``) are written into one byte matrix."""
    if set(map(type, row_ids)) != {int}:
        return [aad + str(r).encode() for r in row_ids]
    digits = None if np is None else _digits(np, row_ids)
    if digits is None:
        return [aad + b"%d" % r for r in row_ids]  # the same bytes as str(r).encode()
    rows = np.empty((len(row_ids), len(aad) + digits.shape[1]), np.uint8)
    rows[:, : len(aad)] = np.frombuffer(aad, np.uint8)
    rows[:, len(aad) :] = digits
    return rows.view(f"V{rows.shape[1]}").ravel().tolist()  # void records: bytes, nothing stripped


_FOUR_DIGITS: Any = None  # numpy: "0000" .. "9999", each four ASCII bytes as one uint32


def _digits(np: Any, row_ids: Sequence[int]) -> Any:
    """The decimal digits of ``row_ids`` as a uint8 matrix, a row an id, made four digits a step;
    None unless they are all of one length, from 0 to 2**63 - 1."""
    global _FOUR_DIGITS
    try:
        ids = np.fromiter(row_ids, np.int64, len(row_ids))
    except OverflowError:
        return None
    width = len(str(ids.max())) if len(ids) else 0
    if not width or ids.min() < 0 or len(str(ids.min())) != width:
        return None
    if _FOUR_DIGITS is None:
        _FOUR_DIGITS = np.frombuffer(b"".join(b"%04d" % i for i in range(10_000)), np.uint32)
    groups = -(-width // 4)
    fours = np.empty((len(ids), groups), np.uint32)
    for k in range(groups - 1, -1, -1):
        ids, low = np.divmod(ids, 10_000)
        fours[:, k] = _FOUR_DIGITS[low]
    return fours.view(np.uint8)[:, 4 * groups - width :]


def derive_key(key: bytes, purpose: bytes) -> bytes:
    """A key for one purpose (HKDF-SHA256), so the cipher and the blind index never share a key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)


KeySource = Callable[[], Any] | Mapping[str, Any] | str | bytes | None
