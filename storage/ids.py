"""Public object ids: a type prefix plus 24 random base62 characters (~143 bits)."""

import secrets
import string

_ALPHABET = string.ascii_letters + string.digits


def random_token(length: int = 24) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def new_id(prefix: str) -> str:
    """`new_id("file-")` -> `file-3kT…`; prefixes carry their own separator, as OpenAI's do."""
    return prefix + random_token()
