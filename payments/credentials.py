"""The secrets clients hold: API keys and payment tokens, and how they are checked.

An API key is `s402_<prefix>_<secret>`: the prefix finds the row, the secret
is kept only as a SHA-256 hash (it has 256 bits of entropy, so a slow hash
buys nothing) and compared in constant time.

A job secret (`s402job_...`) reads one async job; like an API key's secret it
is stored only as a hash.

A payment token is `<paymentId>.<mac>`, the MAC an HMAC of the payment id under
SECRET_KEY: nothing secret is stored, and the bound client can be shown its
token again. Rotating SECRET_KEY invalidates outstanding tokens.
"""

import hashlib
import hmac
import secrets

from django.utils.crypto import salted_hmac

API_KEY_PREFIX = "s402"
_TOKEN_SALT = "server402.payments.token"
# Compared against when a prefix is unknown, so a miss costs what a hit costs.
_DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


def api_key_generate(prefix: str | None = None) -> tuple[str, str, str]:
    """(full key, prefix, hash of the full key); a given prefix is kept (rotating a key's secret)."""
    prefix = prefix or secrets.token_hex(6)
    key = f"{API_KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, api_key_hash(key)


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_prefix(key: str) -> str | None:
    """The lookup prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != API_KEY_PREFIX or len(parts[1]) != 12 or not parts[2]:
        return None
    return parts[1]


def api_key_matches(key: str, stored_hash: str | None) -> bool:
    """Constant-time check of a presented key against its stored hash (None: unknown prefix)."""
    matched = hmac.compare_digest(api_key_hash(key), stored_hash or _DUMMY_HASH)
    return matched and stored_hash is not None


def payment_id_generate() -> str:
    # 128 random bits: ids cannot be guessed or enumerated.
    return f"pay_{secrets.token_hex(16)}"


def job_id_generate() -> str:
    return f"job_{secrets.token_hex(16)}"


JOB_SECRET_PREFIX = "s402job_"


def job_secret_generate() -> tuple[str, str]:
    """(secret, its hash): the secret reads one job; only the hash is stored."""
    secret = f"{JOB_SECRET_PREFIX}{secrets.token_urlsafe(32)}"
    return secret, job_secret_hash(secret)


def job_secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def payment_token(payment_id: str) -> str:
    mac = salted_hmac(_TOKEN_SALT, payment_id, algorithm="sha256").hexdigest()
    return f"{payment_id}.{mac}"


def payment_token_id(token: str) -> str | None:
    """The payment id a token was issued for, if its MAC is right; None otherwise."""
    payment_id, dot, _ = token.rpartition(".")
    if not dot or not payment_id.startswith("pay_") or len(token) > 200:
        return None
    return payment_id if hmac.compare_digest(payment_token(payment_id), token) else None
