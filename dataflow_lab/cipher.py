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
import operator
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
        key_id = key_id or self.current
        encrypt, head, aad = self._aead[key_id].encrypt, self._heads[key_id], self._aad(column, "")
        encode = str.encode if kind == "text" else (lambda v: _encode(kind, v))
        urandom, b64 = os.urandom, base64.b64encode

        def seal(row_id: Any, value: Any) -> str:
            nonce = urandom(NONCE)
            return (
                PREFIX
                + b64(head + nonce + encrypt(nonce, encode(value), aad + str(row_id).encode())).decode()
            )

        return seal

    def seal_many(
        self, column: str, kind: str, row_ids: Sequence[Any], values: Sequence[Any], key_id: str | None = None
    ) -> list[str | None]:
        """``seal`` of each of ``values`` (None stays None) to the row id beside it: BulkCreate's hot loop.

        Each value is still one AES-GCM call with its own nonce (about 0.6 µs, the GIL held:
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
        blocks = self._blocks(column, kind, row_ids, values, key_id, packed=False)
        return blocks[0] if len(blocks) == 1 else list(itertools.chain.from_iterable(blocks))  # (none: [])

    def seal_packed(
        self, column: str, kind: str, row_ids: Sequence[Any], values: Sequence[Any], key_id: str | None = None
    ) -> Packed | list[str | None]:
        """``seal_many`` as one ``Packed`` buffer, not a str per value, for a bulk path that takes
        Arrow columns (DuckDB's); a column holding a None is a list."""
        if None in values:
            return self.seal_many(column, kind, row_ids, values, key_id)
        return Packed(b"".join(self._blocks(column, kind, row_ids, values, key_id, packed=True)), len(values))

    def _blocks(
        self, column: str, kind: str, row_ids: Sequence[Any], values: Sequence[Any], key_id: str | None,
        *, packed: bool,
    ) -> list[Any]:  # fmt: skip
        key_id = key_id or self.current
        encrypt, head, aad = self._aead[key_id].encrypt, self._heads[key_id], self._aad(column, "")
        seal = functools.partial(_seal_block, encrypt, head, aad, kind, packed)
        return [seal(row_ids[i : i + BLOCK], values[i : i + BLOCK]) for i in range(0, len(values), BLOCK)]

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
    encrypt: Callable[..., bytes], head: bytes, aad: bytes, kind: str, packed: bool,
    row_ids: Sequence[Any], values: Sequence[Any],
) -> Any:  # fmt: skip
    """``Cipher.seal_many`` of one block (no None in ``values``): a list of str, or (``packed``) one
    buffer of newline-ended ciphertexts (base64 ends each record with its newline)."""
    pool = os.urandom(NONCE * len(values))
    nonces = [pool[i : i + NONCE] for i in range(0, len(pool), NONCE)]
    if set(map(type, row_ids)) == {int}:
        aads = [aad + b"%d" % r for r in row_ids]  # the same bytes as str(r).encode()
    else:
        aads = [aad + str(r).encode() for r in row_ids]
    plain = map(str.encode, values) if kind == "text" else (_encode(kind, v) for v in values)
    sealed = map(encrypt, nonces, plain, aads)  # the AES-GCM calls, in one C-level loop
    prefix, b2a = PREFIX.encode(), binascii.b2a_base64
    if packed:
        lines = b"".join(map(b2a, map(operator.add, map(head.__add__, nonces), sealed)))
        return prefix + lines[:-1].replace(b"\n", b"\n" + prefix) + b"\n"
    return [(prefix + b2a(head + n + c, newline=False)).decode() for n, c in zip(nonces, sealed, strict=True)]


def derive_key(key: bytes, purpose: bytes) -> bytes:
    """A key for one purpose (HKDF-SHA256), so the cipher and the blind index never share a key."""
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.kdf.hkdf import HKDF

    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(key)
