"""DaskRuntime's task payloads sealed for the trip to and from a worker (AES-256-GCM, encryption.py's keys)."""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any, NamedTuple

from .cipher import derive_key
from .encryption import ENV_KEY, NONCE, VERSION, load_keys
from .errors import EncryptionError

__all__ = ["Envelope", "Transit"]


class Envelope(NamedTuple):
    """A task payload sealed for its trip to or from a Dask worker: pickled, then AES-256-GCM."""

    key_id: str
    nonce: bytes
    data: bytes

    def __repr__(self) -> str:
        return f"<sealed payload, {len(self.data)} bytes, key {self.key_id!r}>"


class Transit:
    """Seals DaskRuntime's task payloads (parameters, upstream results, saga steps) whole, so that
    neither the scheduler, the network nor a worker's spilled memory ever holds the plaintext of an
    encrypted field. The key is derived for this purpose from the keyring's current key; the
    associated data binds the run id, so a payload of one run does not open in another. Workers
    take the keyring from their environment (``DATAFLOW_ENCRYPTION_KEY``), never from the payload.

    Only holders of the key can make an envelope, so unpickling an opened one runs nothing foreign.
    """

    def __init__(self, keys: Mapping[str, bytes], run_id: str):
        from cryptography.hazmat.primitives.ciphers.aead import AESGCM

        self.current, self.run_id = list(keys)[-1], run_id
        self._aead = {k: AESGCM(derive_key(v, b"dataflow_lab dask transit")) for k, v in keys.items()}
        self._aad = f"dataflow_lab/{VERSION}\x00transit\x00{run_id}".encode()

    @classmethod
    def on_worker(cls, run_id: str) -> Transit:
        keys = load_keys(None)
        if keys is None:
            raise EncryptionError(
                f"This Dask worker has no {ENV_KEY}, so it cannot open the task of run {run_id}, whose "
                "workflow touches encrypted fields.",
                hint=f"set {ENV_KEY} (the client's keyring) in every worker's environment.",
            )
        return cls(keys, run_id)

    def seal(self, value: Any) -> Envelope:
        nonce = os.urandom(NONCE)
        data = self._aead[self.current].encrypt(nonce, pickle.dumps(value), self._aad)
        return Envelope(self.current, nonce, data)

    def open(self, value: Any) -> Any:
        """``value`` opened (anything but an Envelope is returned as it is)."""
        if not isinstance(value, Envelope):
            return value
        aead = self._aead.get(value.key_id)
        if aead is None:
            raise EncryptionError(
                f"A task payload of run {self.run_id} was sealed with key '{value.key_id}', which this "
                f"process's keyring ({', '.join(self._aead)}) does not hold.",
                hint=f"give the client and every Dask worker the same {ENV_KEY}.",
            )
        from cryptography.exceptions import InvalidTag

        try:
            return pickle.loads(aead.decrypt(value.nonce, value.data, self._aad))  # noqa: S301 - authenticated
        except InvalidTag:
            raise EncryptionError(
                f"A task payload of run {self.run_id} did not decrypt with key '{value.key_id}': the "
                "client's and this worker's keys differ.",
                hint=f"give the client and every Dask worker the same {ENV_KEY}.",
            ) from None
