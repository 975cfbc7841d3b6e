"""The cipher of encrypted fields (AES-256-GCM): ``Cipher``, what it seals a block of values with,
and ``derive_key``. encryption.py's docstring describes the stored form and the keys.

It loads with the first model that has an encrypted field (a ``Cipher`` is made only from keys),
not with every DataFlow.
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
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from .encryption import ENV_KEY, NONCE, PREFIX, VERSION, Packed
from .errors import DecryptionError

__all__ = ["BLOCK", "Cipher", "derive_key"]


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
