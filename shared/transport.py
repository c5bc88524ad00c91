"""kombu's Redis transport, with two fixes: losing Redis, and queue items that are not messages.

**Losing Redis while messages are unacked.** On a lost connection kombu closes the channel
and tries to hand its unacked messages back, but by then the connection's settings are
gone, and the AttributeError it hits is not one the worker ignores: the worker process
exits (seen on kombu 5.7.0 with a Redis restart mid-run). Here that case is a connection
error, which the worker rides out like any other; the messages come back by the
visibility-timeout scan instead.

**Garbage on a queue.** kombu 5.7.0 pops a queue's lists (`name`, and the priority lists
`name\\x06\\x16<step>`) with BRPOP and decodes the item inline, with no hook
(`Channel._brpop_read`: `_deliver(loads(bytes_to_str(item)), queue)`, whose callback then
builds a `Message` from it). An item that is not UTF-8 JSON, JSON that is not a kombu
envelope, or an envelope whose body does not decode (bad base64) raises out of the event
loop: the worker exits ("Unrecoverable error: JSONDecodeError") and the item, already
popped, is gone. Here each item is decoded and checked before it is delivered; one that
is not a message goes to the dead-letter store (its bytes, its queue, the reason) and the
worker goes on. kombu's restore scan of unacked messages (`QoS.restore_by_tag`, run at
every worker's start and every `unacked_restore_interval`) decodes the `unacked` hash's
entries the same bare way, so one bad entry there would stop every worker: such an entry
is dead-lettered and dropped instead. What a well-formed envelope carries (a body that is
not JSON, an unknown task, arguments that do not fit) is the consumer's business
(`workers/consumer.py`).
"""

from __future__ import annotations

import logging
from queue import Empty
from typing import Any

from kombu.transport import TRANSPORT_ALIASES
from kombu.transport import redis as kombu_redis
from kombu.utils.encoding import bytes_to_str
from kombu.utils.json import loads
from redis.exceptions import ConnectionError as RedisConnectionError

from fleetline.shared.deadletters import DeadLetterStore, raw_item

log = logging.getLogger(__name__)

# If the settings cannot be read here (they always can in a worker), cap the stream at this.
DEFAULT_DEAD_LETTER_MAX = 10_000

Problem = tuple[str, str]  # (reason, detail) of an item that is not a message


def _dead_letter_max() -> int:
    try:
        from fleetline.shared.settings import get_settings

        return get_settings().celery.dead_letter_max
    except Exception:
        return DEFAULT_DEAD_LETTER_MAX


def _decode(data: Any) -> Any:
    """A Redis item decoded as kombu 5.7.0's Redis transport does it."""
    return loads(bytes_to_str(data))  # type: ignore[no-untyped-call]


def _short(value: Any, limit: int = 200) -> str:
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}..."


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _bytes(value: Any) -> bytes:
    return value if isinstance(value, bytes) else str(value).encode("utf-8", "surrogatepass")


def _headers(payload: Any) -> dict[str, Any]:
    headers = payload.get("headers") if isinstance(payload, dict) else None
    return headers if isinstance(headers, dict) else {}


class QoS(kombu_redis.QoS):
    def restore_by_tag(self, tag: Any, client: Any = None, leftmost: bool = False) -> None:
        # kombu 5.7.0 decodes the entry inside its transaction with a bare `loads` and
        # raises out of the restore scan; an entry that is not [envelope, exchange,
        # routing key] is dead-lettered and dropped from the unacked indices instead.
        with self.channel.conn_or_acquire(client) as conn:
            entry = conn.hget(self.unacked_key, tag)
            problem = None if entry is None else self.channel.unacked_problem(entry)
            if problem is None:
                super().restore_by_tag(tag, client=conn, leftmost=leftmost)  # type: ignore[no-untyped-call]
                return
            reason, detail = problem
            store_max = _dead_letter_max()

            def drop(pipe: Any) -> None:
                found = pipe.hget(self.unacked_key, tag)
                pipe.multi()
                if found:
                    DeadLetterStore(pipe, store_max).add(
                        reason=reason,
                        detail=f"unacked entry {_short(tag)}: {detail}",
                        queue="",
                        task="",
                        task_id="",
                        message=raw_item(_bytes(found)),
                    )
                self._remove_from_indices(tag, pipe)  # type: ignore[no-untyped-call]

            log.error("unacked entry %s is not a message (%s): %s", _short(tag), reason, detail)
            try:
                conn.transaction(drop, self.unacked_key)
            except self.channel.connection_errors:
                raise
            except Exception:
                log.exception("could not dead-letter unacked entry %s", _short(tag))


class Channel(kombu_redis.Channel):
    QoS = QoS

    def _connparams(self, asynchronous: bool = False) -> Any:
        if self.connection is None or self.connection.client is None:
            raise RedisConnectionError("connection closed while restoring unacked messages")
        return super()._connparams(asynchronous)  # type: ignore[no-untyped-call]

    def _brpop_read(self, **options: Any) -> bool:
        # kombu 5.7.0's `_brpop_read` line for line, except that the item is decoded and
        # checked by `_payload` (garbage is dead-lettered, nothing is delivered) instead
        # of `_deliver(loads(bytes_to_str(item)), dest)` raising out of the event loop.
        try:
            try:
                dest__item = self.client.parse_response(self.client.connection, "BRPOP", **options)
            except self.connection_errors:
                # if there's a ConnectionError, disconnect so the next
                # iteration will reconnect automatically.
                self.client.connection.disconnect()
                raise
            if not dest__item:
                raise Empty()
            dest, item = dest__item
            key = str(bytes_to_str(dest))  # type: ignore[no-untyped-call]
            queue = key.rsplit(self.sep, 1)[0]
            self._queue_cycle.rotate(queue)
            payload = self._payload(item, queue, key)
            if payload is not None:
                self.connection._deliver(payload, queue)
            return True
        finally:
            self._in_poll = None  # type: ignore[assignment]
            self._flush_brpop_reauth()  # type: ignore[no-untyped-call]

    def _payload(self, item: bytes, queue: str, key: str) -> dict[str, Any] | None:
        """The envelope in a list item, or None once an item that is not one is stored."""
        payload: Any = None
        try:
            problem: Problem | None
            try:
                payload = _decode(item)
            except Exception as exc:  # UnicodeDecodeError, JSONDecodeError, RecursionError
                problem = ("not_json", f"not UTF-8 JSON: {_error(exc)}")
            else:
                problem = self.envelope_problem(payload)
            if problem is None:
                return payload  # type: ignore[no-any-return]
        except Exception as exc:  # a check that fails is garbage too, never a crash
            problem = ("not_an_envelope", f"could not be checked: {_error(exc)}")
        reason, detail = problem
        where = f" (list {key!r})" if key != queue else ""
        self._dead_letter_item(item, queue, reason, f"{detail}{where}", _headers(payload))
        return None

    def envelope_problem(self, payload: Any) -> Problem | None:
        """Why decoded JSON is not a kombu message envelope this channel can deliver (what
        kombu 5.7.0's delivery, ack and restore read without checking), or None."""
        if not isinstance(payload, dict):
            return ("not_an_envelope", f"a JSON {type(payload).__name__}, not an envelope")
        properties = payload.get("properties")
        if not isinstance(properties, dict):
            return ("not_an_envelope", "no 'properties' object")
        if not isinstance(properties.get("delivery_tag"), str):
            return ("not_an_envelope", "no 'properties.delivery_tag' string")
        info = properties.get("delivery_info")
        if not isinstance(info, dict) or not all(
            isinstance(info.get(k), str) for k in ("exchange", "routing_key")
        ):
            return ("not_an_envelope", "no 'properties.delivery_info' exchange and routing key")
        if not isinstance(payload.get("headers", {}), dict):
            return ("not_an_envelope", "'headers' is not an object")
        try:
            # What kombu's consumer callback does first: decode the body (base64).
            self.Message(payload, channel=self)  # type: ignore[no-untyped-call]
        except Exception as exc:
            return ("undecodable", f"body does not decode: {_error(exc)}")
        return None

    def unacked_problem(self, entry: bytes) -> Problem | None:
        """Why an `unacked` hash entry is not [envelope, exchange, routing key], or None."""
        try:
            decoded = _decode(entry)
        except Exception as exc:
            return ("not_json", f"not UTF-8 JSON: {_error(exc)}")
        try:
            if not (
                isinstance(decoded, list)
                and len(decoded) == 3
                and all(isinstance(v, str) for v in decoded[1:])
            ):
                return ("not_an_envelope", "not [envelope, exchange, routing key]")
            return self.envelope_problem(decoded[0])
        except Exception as exc:
            return ("not_an_envelope", f"could not be checked: {_error(exc)}")

    def _dead_letter_item(
        self, item: bytes, queue: str, reason: str, detail: str, headers: dict[str, Any]
    ) -> None:
        """Store a list item that is not a message; never raise into the read path."""
        log.error("an item on queue %s is not a message (%s): %s", queue, reason, detail)
        try:
            with self.conn_or_acquire() as client:
                DeadLetterStore(client, _dead_letter_max()).add(
                    reason=reason,
                    detail=detail,
                    queue=queue,
                    task=str(headers.get("task") or "")[:200],
                    task_id=str(headers.get("id") or "")[:200],
                    message=raw_item(_bytes(item)),
                )
        except Exception:
            log.exception("could not dead-letter an item of %s, lost: %s", queue, _short(item))


class Transport(kombu_redis.Transport):
    Channel = Channel


class SentinelChannel(Channel, kombu_redis.SentinelChannel):
    """The same channel on a Sentinel group's master (kombu's pool follows failovers)."""


class SentinelTransport(kombu_redis.SentinelTransport):
    Channel = SentinelChannel


def register() -> None:
    """Make these the transports of redis://, rediss:// and sentinel:// URLs.

    Under an alias of their own the URL's scheme would become the transport's import path,
    and whatever tells brokers apart by scheme (Flower's broker page and queue lengths,
    kombu's `as_uri`) would no longer know the broker for Redis.
    """
    TRANSPORT_ALIASES.update(
        redis=f"{__name__}:Transport",
        rediss=f"{__name__}:Transport",
        sentinel=f"{__name__}:SentinelTransport",
    )
