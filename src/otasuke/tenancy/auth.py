"""Passwords (argon2) and tokens (only their SHA-256 is stored)."""

from __future__ import annotations

import hashlib
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    return str(_hasher.hash(password))


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return bool(_hasher.verify(password_hash, password))
    except (VerificationError, InvalidHashError):
        return False


def hash_token(token: str) -> str:
    """What we store of a token: its SHA-256 (tokens are random, so no salt is needed)."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str = "") -> tuple[str, str]:
    """A fresh random token and its hash; show the token once, store the hash."""
    token = prefix + secrets.token_urlsafe(32)
    return token, hash_token(token)
