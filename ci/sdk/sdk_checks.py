"""What the two centrifuge-python programs (test_python.py, test_cluster.py)
share: a failed check, and recorders of an SDK client's and subscription's
events."""

import asyncio
import json
import urllib.error
import urllib.request

from centrifuge import ClientEventHandler, SubscriptionEventHandler

WAIT = 5.0  # one expected event


class Failure(AssertionError):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)


class Recorder:
    """Events of one client or subscription, in order: (kind, ctx)."""

    def __init__(self, label: str):
        self.label = label
        self.events: list = []
        self._changed = asyncio.Event()

    def add(self, kind: str, ctx) -> None:
        self.events.append((kind, ctx))
        self._changed.set()

    def of(self, kind: str) -> list:
        return [c for k, c in self.events if k == kind]

    async def wait(self, kind: str, pred=lambda c: True, timeout: float = WAIT):
        """The first `kind` event matching `pred` (waiting for it)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for k, c in self.events:
                if k == kind and pred(c):
                    return c
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise Failure(
                    f"{self.label}: no {kind!r} event within {timeout}s; "
                    f"events: {self.summary()}"
                )
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    def summary(self) -> str:
        return "[" + ", ".join(f"{k} {c}" for k, c in self.events)[:1500] + "]"


class ClientEvents(ClientEventHandler):
    def __init__(self, rec: Recorder):
        self.rec = rec

    async def on_connecting(self, ctx):
        self.rec.add("connecting", ctx)

    async def on_connected(self, ctx):
        self.rec.add("connected", ctx)

    async def on_disconnected(self, ctx):
        self.rec.add("disconnected", ctx)

    async def on_error(self, ctx):
        self.rec.add("error", ctx)

    # Server-side subscriptions (token `channels`, /api/subscribe).
    async def on_subscribed(self, ctx):
        self.rec.add("server_subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        self.rec.add("server_unsubscribed", ctx)

    async def on_publication(self, ctx):
        self.rec.add("server_publication", ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self, rec: Recorder):
        self.rec = rec

    async def on_subscribing(self, ctx):
        self.rec.add("subscribing", ctx)

    async def on_subscribed(self, ctx):
        self.rec.add("subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        self.rec.add("unsubscribed", ctx)

    async def on_publication(self, ctx):
        self.rec.add("publication", ctx)

    async def on_error(self, ctx):
        self.rec.add("error", ctx)


# Direct connections only: a proxy from the environment must not answer for
# the gateway.
_opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def http_request(method: str, url: str, body, headers: dict):
    """(status, body bytes) of one request; `body` is bytes or JSON-able."""
    data = None
    if body is not None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    try:
        with _opener.open(req, timeout=WAIT) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
