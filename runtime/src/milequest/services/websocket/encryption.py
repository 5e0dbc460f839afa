"""End-to-end encrypted channels (``private-encrypted-``), as Pusher's SDKs implement them.

Each channel's key is ``SHA-256(channel name + master key)``; the channel-auth answer hands
it to the subscriber as ``shared_secret`` (base64), and event data is NaCl secretbox
ciphertext, sent as ``{"nonce", "ciphertext"}`` (both base64). pusher-js's
``with-encryption`` build decrypts it. PyNaCl does the cryptography; this module only
follows Pusher's layout.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json

MASTER_KEY_BYTES = 32


def parse_master_key(value: str) -> bytes:
    """The 32-byte master key from its base64 text; ``ValueError`` when it is not that."""
    try:
        key = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the encryption master key must be base64") from None
    if len(key) != MASTER_KEY_BYTES:
        raise ValueError(f"the encryption master key must decode to 32 bytes, not {len(key)}")
    return key


def shared_secret(channel: str, master_key: bytes) -> bytes:
    """The channel's secretbox key."""
    return hashlib.sha256(channel.encode() + master_key).digest()


def encrypt(channel: str, data: str, master_key: bytes) -> str:
    """``data`` sealed for ``channel``: the JSON text ``{"nonce", "ciphertext"}``."""
    import nacl.secret
    import nacl.utils

    box = nacl.secret.SecretBox(shared_secret(channel, master_key))
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    sealed = box.encrypt(data.encode(), nonce)
    return json.dumps(
        {
            "nonce": base64.b64encode(nonce).decode(),
            "ciphertext": base64.b64encode(sealed.ciphertext).decode(),
        },
        separators=(",", ":"),
    )


def decrypt(channel: str, payload: str, master_key: bytes) -> str:
    """The plain text of :func:`encrypt`'s output (what a subscriber's client does)."""
    import nacl.secret

    sealed = json.loads(payload)
    box = nacl.secret.SecretBox(shared_secret(channel, master_key))
    plain: bytes = box.decrypt(
        base64.b64decode(sealed["ciphertext"]), base64.b64decode(sealed["nonce"])
    )
    return plain.decode()
