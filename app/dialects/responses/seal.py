"""Sealing with AES-256-GCM under keys derived from the master key (HKDF-SHA256, one ``purpose`` each).

A sealed value is ``base64url(nonce(12) || ciphertext || tag(16))`` without padding. ``open`` returns
``None`` for anything this gateway did not seal with the same purpose, master key and associated data
(forged, truncated, from another provider): a client cannot make the gateway accept text it did not
write. Used for the reasoning carried in ``encrypted_content`` and for stored responses at rest.
"""

from __future__ import annotations

import base64
import binascii
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE_BYTES = 12


class Sealer:
    def __init__(self, master_key: str, purpose: str) -> None:
        hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"seedgate", info=purpose.encode())
        self._aead = AESGCM(hkdf.derive(master_key.encode()))

    def seal(self, plain: bytes, associated: bytes = b"") -> str:
        nonce = os.urandom(NONCE_BYTES)
        sealed = nonce + self._aead.encrypt(nonce, plain, associated)
        return base64.urlsafe_b64encode(sealed).rstrip(b"=").decode()

    def open(self, token: str, associated: bytes = b"") -> bytes | None:
        try:
            raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        except (binascii.Error, ValueError):
            return None
        if len(raw) <= NONCE_BYTES + 16:
            return None
        try:
            return self._aead.decrypt(raw[:NONCE_BYTES], raw[NONCE_BYTES:], associated)
        except InvalidTag:
            return None
