"""The bus worker loop (``otasuke worker``): pull, store + detect in one commit, ack, notify.

Every worker binds to the same durable pull consumer, so JetStream hands each message
to one of them; a message not acknowledged within ``ack_wait`` (its worker died) is
delivered again to whichever worker pulls next. While a long transaction runs the
worker tells JetStream it is still in progress, so a slow commit is not redelivered.

Errors: NATS unreachable → reconnect with backoff; a database error → the message is
given back (nak with a delay) and the worker waits before pulling again; any other
error (bad data too) → the message is given back, and after ``poison_after`` deliveries it is kept
whole in the quarantine and acknowledged, so one bad message never stops the rest.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from sqlalchemy.exc import InterfaceError, OperationalError, SQLAlchemyError

from otasuke.bus.consume import BatchHandler, HandleResult, WorkerStats
from otasuke.bus.jetstream import (
    Backoff,
    BusConfig,
    close_quietly,
    connect,
    pull_subscription,
    sleep_or_stop,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


class BusWorker:
    """One worker process's consumer loop."""

    def __init__(
        self,
        config: BusConfig,
        handler: BatchHandler,
        notify: Callable[[], int] | None = None,
        *,
        notify_every_seconds: float = 30.0,
        poison_after: int = 10,
        stop_when_idle_seconds: float | None = None,
    ) -> None:
        self.config = config
        self.handler = handler
        self.notify = notify
        self.notify_every = notify_every_seconds
        self.poison_after = poison_after
        self.stop_when_idle = stop_when_idle_seconds
        self.stats = WorkerStats()
        self._notify_now = False
        self._last_notify = 0.0
        self._last_message = time.monotonic()
        self._db_backoff = Backoff(config.retry_initial_seconds, config.retry_max_seconds)

    async def run(self, stop: asyncio.Event) -> None:
        """Consume until ``stop`` is set (or, with stop_when_idle, until the stream is idle)."""
        backoff = Backoff(self.config.retry_initial_seconds, self.config.retry_max_seconds)
        while not stop.is_set():
            nc: NatsClient | None = None
            try:
                nc = await connect(self.config)
                psub = await pull_subscription(nc.jetstream(), self.config)
                backoff.reset()
                log.info(
                    "worker: consuming %s as %s on %s",
                    self.config.stream,
                    self.config.durable,
                    ",".join(self.config.servers),
                )
                await self._consume(nc, psub, stop)
            except (NatsError, OSError, TimeoutError) as err:
                log.warning("worker: NATS error (%s: %s); reconnecting", type(err).__name__, err)
                if await sleep_or_stop(stop, backoff.next()):
                    break
            finally:
                await close_quietly(nc)  # a broken connection must not end the worker
        await self._notify(force=True)

    async def _consume(
        self, nc: NatsClient, psub: JetStreamContext.PullSubscription, stop: asyncio.Event
    ) -> None:
        while not stop.is_set():
            if nc.is_closed:
                raise NatsError("connection closed")
            try:
                msgs = await psub.fetch(self.config.fetch_batch, timeout=1.0)
            except NatsTimeoutError:
                msgs = []
            for n, msg in enumerate(msgs):
                if stop.is_set():
                    for rest in msgs[n:]:  # give them back at once, not after ack_wait
                        await rest.nak()
                    break
                await self._one(msg)
                self._last_message = time.monotonic()
            await self._notify(force=False)
            idle = time.monotonic() - self._last_message
            if not msgs and self.stop_when_idle is not None and idle >= self.stop_when_idle:
                log.info("worker: idle for %.1f s, stopping", idle)
                stop.set()

    async def _one(self, msg: Msg) -> None:
        meta = msg.metadata
        delivered = meta.num_delivered or 1
        label = f"{meta.stream}#{meta.sequence.stream}"
        if delivered > 1:
            self.stats.redelivered += 1
        try:
            result: HandleResult = await self._while_in_progress(
                msg, self.handler.handle, msg.data, label
            )
        except (OperationalError, InterfaceError) as err:  # the database is unreachable
            delay = self._db_backoff.next()
            self.stats.retried += 1
            log.warning("worker: database error on %s, retrying in %.1f s: %s", label, delay, err)
            await msg.nak(delay=delay)
            await asyncio.sleep(delay)  # the database is likely down for the next one too
            return
        except Exception as err:  # kept for a retry, then in the quarantine: never lost
            if delivered < self.poison_after:
                self.stats.retried += 1
                log.exception("worker: %s failed (delivery %d); given back", label, delivered)
                await msg.nak(delay=min(2.0**delivered, 60.0))
                return
            await self._while_in_progress(
                msg, self.handler.quarantine_message, msg.data, label, repr(err)
            )
            self.stats.poisoned += 1
            log.error("worker: %s failed %d times; kept in the quarantine", label, delivered)
            await msg.ack_sync()
            return
        self._db_backoff.reset()
        await msg.ack_sync()  # only after the commit: a crash before this redelivers
        self.stats.add(result)
        self._notify_now = self._notify_now or result.serious_pending

    async def _while_in_progress(self, msg: Msg, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn`` in a thread; tell JetStream we are at work every third of ack_wait."""
        future = asyncio.get_running_loop().run_in_executor(None, fn, *args)
        beat = max(self.config.ack_wait_seconds / 3, 0.5)
        while True:
            done, _ = await asyncio.wait({future}, timeout=beat)
            if done:
                return future.result()
            try:
                await msg.in_progress()
            except NatsError as err:  # the commit goes on; a redelivery is a duplicate
                log.warning("worker: could not send in-progress: %s", err)

    async def _notify(self, *, force: bool) -> None:
        if self.notify is None:
            return
        due = self._notify_now or time.monotonic() - self._last_notify >= self.notify_every
        if not (due or force):
            return
        self._notify_now = False
        self._last_notify = time.monotonic()
        try:
            self.stats.notified += await asyncio.to_thread(self.notify)
        except SQLAlchemyError as err:
            log.warning("worker: notification pass failed (database): %s", err)
            self._notify_now = True
