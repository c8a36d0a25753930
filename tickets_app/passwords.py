"""Staff passwords: argon2id at OWASP's parameters, older hashes upgraded when their owner logs in.

OWASP's Password Storage Cheat Sheet: argon2id with at least 19 MiB of memory, 2 iterations and 1 degree
of parallelism; that is what new hashes use (a verification takes about 35 ms on this machine). Hashes
made before issue 12 (stdlib scrypt at N=2**14, below OWASP's minimum of N=2**17) still verify, and a
successful login stores the password's argon2id hash instead, as it does for an argon2 hash made with
other parameters.

A login for a username that does not exist verifies the password against a dummy hash all the same, so
the answer takes as long as for a real user with a wrong password and does not tell which names exist.
"""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac

import argon2

from tickets_app.models import StaffUser

HASHER = argon2.PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1, type=argon2.Type.ID)


def hash_password(password: str) -> str:
    return HASHER.hash(password)


def check_login(user: StaffUser | None, password: str) -> bool:
    """Whether `password` is `user`'s. On success a hash made by an older scheme or with other parameters
    is replaced on `user` (the caller commits); with no user a dummy hash is verified and False returned."""
    if user is None:
        _matches(_dummy_hash(), password)
        return False
    if not _matches(user.password_hash, password):
        return False
    if _is_scrypt(user.password_hash) or HASHER.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return True


def _matches(stored: str, password: str) -> bool:
    if _is_scrypt(stored):
        return _scrypt_matches(stored, password)
    try:
        return HASHER.verify(stored, password)
    except (argon2.exceptions.VerificationError, argon2.exceptions.InvalidHashError):
        return False


@functools.cache
def _dummy_hash() -> str:
    return hash_password("no staff user has this password")


def _is_scrypt(stored: str) -> bool:
    return stored.startswith("scrypt$")


def _scrypt_matches(stored: str, password: str) -> bool:
    """The desk's hashes before issue 12: ``scrypt$N$r$p$salt$digest``, base64 salt and digest."""
    try:
        _, n, r, p, salt, digest = stored.split("$")
        computed = hashlib.scrypt(
            password.encode(), salt=base64.b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(computed, base64.b64decode(digest))
