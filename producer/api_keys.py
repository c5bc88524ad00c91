"""API keys: each names one tenant, and only its SHA-256 is ever stored.

A key reads `fl_<key id>_<secret>`; the key id is public (listings, revocation), the
secret is shown once, when the key is made. Looking a key up is one HGETALL on its hash.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from fleetline.shared import keys
from fleetline.shared.errors import FleetlineError

TENANT_PATTERN = r"^[\w.-]{1,64}$"


class UnknownKey(FleetlineError):
    """No such API key."""


@dataclass(frozen=True)
class ApiKey:
    """A stored key: who it speaks for (never the secret)."""

    key_id: str
    tenant: str
    name: str
    created_at: float

    def as_dict(self) -> dict[str, Any]:
        return {
            "key_id": self.key_id,
            "tenant": self.tenant,
            "name": self.name,
            "created_at": self.created_at,
        }


def digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


class ApiKeys:
    """The key store in Redis."""

    def __init__(self, client: redis.Redis) -> None:
        self._r = client

    def create(self, tenant: str, name: str = "") -> tuple[str, ApiKey]:
        """A new key for `tenant`: (the key, shown once; its stored record)."""
        key_id = secrets.token_hex(4)
        key = f"fl_{key_id}_{secrets.token_urlsafe(32)}"
        record = ApiKey(key_id, tenant, name, time.time())
        pipe = self._r.pipeline(transaction=True)
        items = [part for pair in _fields(record).items() for part in pair]
        pipe.hset(keys.api_key(digest(key)), items=items)
        pipe.hset(keys.api_key_index(), key_id, digest(key))
        pipe.execute()
        return key, record

    def lookup(self, key: str) -> ApiKey | None:
        """The record of a presented key, or None when it is unknown or revoked."""
        raw = self._r.hgetall(keys.api_key(digest(key)))
        return _parse(raw) if raw else None

    def list(self) -> list[ApiKey]:
        index = self._r.hgetall(keys.api_key_index())
        pipe = self._r.pipeline(transaction=False)
        for hashed in index.values():
            pipe.hgetall(keys.api_key(_text(hashed)))
        found = [_parse(raw) for raw in pipe.execute() if raw]
        return sorted(found, key=lambda k: (k.tenant, k.created_at))

    def revoke(self, key_id: str) -> ApiKey:
        """Revoke a key at once (its next request gets 401); UnknownKey when none."""
        hashed = self._r.hget(keys.api_key_index(), key_id)
        if hashed is None:
            raise UnknownKey(f"no API key {key_id}")
        raw = self._r.hgetall(keys.api_key(_text(hashed)))
        pipe = self._r.pipeline(transaction=True)
        pipe.delete(keys.api_key(_text(hashed)))
        pipe.hdel(keys.api_key_index(), key_id)
        pipe.execute()
        return _parse(raw) if raw else ApiKey(key_id, "", "", 0.0)


def _fields(record: ApiKey) -> dict[str, str]:
    return {
        "key_id": record.key_id,
        "tenant": record.tenant,
        "name": record.name,
        "created_at": repr(record.created_at),
    }


def _parse(raw: dict[Any, Any]) -> ApiKey:
    fields = {_text(k): _text(v) for k, v in raw.items()}
    return ApiKey(
        fields["key_id"], fields["tenant"], fields.get("name", ""), float(fields["created_at"])
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
