#!/usr/bin/env python3
"""End-to-end tests of the gateway's pubsub route with the real
centrifuge-python SDK (pinned in requirements.txt), plus the server HTTP API
with plain HTTP. Run by ci/sdk-tests.sh, which starts the gateways and sets:

  SDK_WS_URL          ws://ADDR/connection/websocket  (ci/sdk/gateway.toml, 2 workers)
  SDK_API_URL         http://ADMIN/api                (its server API)
  SDK_NOANON_WS_URL   ws://ADDR/connection/websocket  (ci/sdk/gateway-noanon.toml)
  SDK_GATEWAY_CONFIG  path of gateway.toml (token secret, API key, namespaces)

Every check asserts, and every wait is bounded (a check is also cut off
after CHECK_TIMEOUT seconds). Prints one line per check and a closing
"python: N passed, N failed"; exits 1 on any failure.

Expected answers are Centrifugo's / the centrifuge library's (sources named
in the comments): reply errors 102 unknown channel, 103 permission denied, 108 not
available, 109 token expired; close codes 3500 invalid token, 3501 bad
request, 3503 force disconnect; unsubscribe push 2000 server unsubscribe.
"""

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import os
import sys
import time
import tomllib
import traceback
import uuid

from sdk_checks import ClientEvents, Failure, Recorder, SubEvents, check, http_request
from centrifuge import (
    Client,
    ClientState,
    ReplyError,
    SubscriptionState,
)

WS_URL = os.environ["SDK_WS_URL"]
API_URL = os.environ["SDK_API_URL"].rstrip("/")
NOANON_WS_URL = os.environ["SDK_NOANON_WS_URL"]
with open(os.environ["SDK_GATEWAY_CONFIG"], "rb") as f:
    CONFIG = tomllib.load(f)
SECRET = CONFIG["pubsub"]["token_hmac_secret"]
API_KEY = CONFIG["api"]["key"]

# The SDK logs handler/decode exceptions with tracebacks; the checks report
# what the SDK did (events, codes) instead. SDK_DEBUG=1 shows its debug log.
logging.basicConfig(level=logging.DEBUG if os.environ.get("SDK_DEBUG") else logging.CRITICAL)

WAIT = 5.0  # one expected event
CHECK_TIMEOUT = 30.0  # one whole check
QUIET = 0.5  # how long "nothing arrives" is watched

# Unique per run, so channels never collide with anything else.
RUN = uuid.uuid4().hex[:8]


def ch(name: str) -> str:
    """A channel name unique to this run: 'ns:rest' keeps its namespace."""
    return f"{name}-py{RUN}"


# ---------------------------------------------------------------------------
# HS256 JWT, signed here (no JWT package).


def b64url(b: bytes) -> str:
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def jwt(claims: dict, secret: str = SECRET) -> str:
    header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    payload = b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}".encode()
    sig = hmac.new(secret.encode(), signing_input, hashlib.sha256).digest()
    return f"{header}.{payload}.{b64url(sig)}"


def user_token(sub: str, ttl: int = 600, **extra) -> str:
    return jwt({"sub": sub, "exp": int(time.time()) + ttl, **extra})


# ---------------------------------------------------------------------------
# Plain HTTP for the server API (no proxies from the environment).



async def http(method: str, path: str, body=None, headers=None):
    """(status, body bytes); runs in a thread so the SDKs keep reading."""
    h = {"Content-Type": "application/json"}
    h.update(headers or {})
    return await asyncio.to_thread(http_request, method, API_URL + path, body, h)


async def api(endpoint: str, body: dict, auth: str = "x-api-key") -> dict:
    """POST /api/ENDPOINT with the key; asserts 200 and returns the JSON."""
    if auth == "x-api-key":
        headers = {"X-API-Key": API_KEY}
    else:
        headers = {"Authorization": f"apikey {API_KEY}"}
    status, raw = await http("POST", f"/{endpoint}", body, headers)
    check(status == 200, f"/api/{endpoint} {body!r}: HTTP {status} {raw!r}")
    return json.loads(raw)


async def api_ok(endpoint: str, body: dict, auth: str = "x-api-key") -> dict:
    """POST /api/ENDPOINT; asserts {"result":...} without "error"."""
    resp = await api(endpoint, body, auth)
    check("error" not in resp and "result" in resp, f"/api/{endpoint}: {resp!r}")
    return resp["result"]


# ---------------------------------------------------------------------------
# Clients of one check (their events recorded, see sdk_checks).


class Session:
    """The clients one check opened; all disconnected when it ends."""

    def __init__(self, name: str):
        self.name = name
        self.clients: list = []

    def client(self, label: str, url: str = WS_URL, token: str = "", get_token=None):
        rec = Recorder(f"{self.name}/{label}")
        c = Client(
            url,
            events=ClientEvents(rec),
            token=token,
            get_token=get_token,
            proxy=None,
            min_reconnect_delay=0.2,
            max_reconnect_delay=1.0,
        )
        c.rec = rec
        self.clients.append(c)
        return c

    async def connected(self, label: str, url: str = WS_URL, token: str = ""):
        c = self.client(label, url, token)
        await asyncio.wait_for(c.connect(), WAIT)
        await c.rec.wait("connected")
        check(c.state == ClientState.CONNECTED, f"{label}: state {c.state}")
        return c

    @staticmethod
    def sub(c: Client, channel: str, token: str = ""):
        rec = Recorder(f"{c.rec.label}/{channel}")
        s = c.new_subscription(channel, events=SubEvents(rec), token=token)
        s.rec = rec
        return s

    async def subscribed(self, c: Client, channel: str):
        s = self.sub(c, channel)
        await s.subscribe()
        await s.rec.wait("subscribed")
        check(s.state == SubscriptionState.SUBSCRIBED, f"{channel}: state {s.state}")
        return s

    async def close(self):
        for c in self.clients:
            try:
                await asyncio.wait_for(c.disconnect(), WAIT)
            except Exception:  # noqa: BLE001 - best effort teardown
                pass


async def quiet(rec: Recorder, kind: str, pred=lambda c: True):
    """Asserts that no matching event arrives within QUIET seconds."""
    await asyncio.sleep(QUIET)
    got = [c for c in rec.of(kind) if pred(c)]
    check(not got, f"{rec.label}: unexpected {kind}: {got!r}")


def pub_with(data):
    return lambda c: c.pub.data == data


# ---------------------------------------------------------------------------
# Checks.


async def t_anonymous_subscribe_api_publish(s: Session):
    """Anonymous connect, subscribe without namespace, API publications with
    X-API-Key and with Authorization: apikey arrive with the exact data."""
    c = await s.connected("anon")
    ctx = c.rec.of("connected")[0]
    check(bool(ctx.client), f"connected without a client id: {ctx}")
    channel = ch("news")
    sub = await s.subscribed(c, channel)
    data1 = {"text": "héllo ✓", "n": 1, "f": 1.5, "nested": {"a": [1, 2, None, True]}}
    result = await api_ok("publish", {"channel": channel, "data": data1})
    check(result == {}, f"publish result {result!r}, want {{}}")
    pub = await sub.rec.wait("publication", pub_with(data1))
    check(pub.pub.info is None, f"API publication carries client info: {pub.pub.info}")
    data2 = ["via", "Authorization: apikey"]
    await api_ok("publish", {"channel": channel, "data": data2}, auth="authorization")
    await sub.rec.wait("publication", pub_with(data2))
    datas = [p.pub.data for p in sub.rec.of("publication")]
    check(datas == [data1, data2], f"publications {datas!r}")


async def t_fanout_both_workers(s: Session):
    """Clients spread over both workers (per-worker num_clients of
    /api/info all non-zero) each receive one API publication."""
    channel = ch("fanout")
    subs = []

    async def open_batch(n):
        for i in range(n):
            c = await s.connected(f"fan{len(subs)}")
            subs.append(await s.subscribed(c, channel))

    async def workers():
        info = await api_ok("info", {})
        node = info["nodes"][0]
        for key in ("uid", "name", "version", "num_clients", "num_users", "num_channels", "num_subs"):
            check(key in node, f"/api/info node without {key!r}: {node}")
        ws = node["workers"]
        check(len(ws) == 2, f"want 2 workers in /api/info, got {ws}")
        check(
            node["num_clients"] == sum(w["num_clients"] for w in ws),
            f"node num_clients != sum of workers: {node}",
        )
        return [w["num_clients"] for w in ws]

    # Earlier checks' clients are gone (their closes processed): the counts
    # below are this check's clients only.
    for _ in range(30):
        if (await workers()) == [0, 0]:
            break
        await asyncio.sleep(0.1)
    check(await workers() == [0, 0], f"clients of earlier checks still counted: {await workers()}")
    # SO_REUSEPORT hashes each connection to a worker: 8 clients all land on
    # one worker with probability 2/256; add batches (at most 32 clients)
    # until both have some, so the check is deterministic in practice.
    await open_batch(8)
    per_worker = await workers()
    while 0 in per_worker and len(subs) < 32:
        await open_batch(8)
        per_worker = await workers()
    check(0 not in per_worker, f"clients not on both workers: {per_worker}")
    data = {"fanout": RUN, "clients": len(subs)}
    await api_ok("publish", {"channel": channel, "data": data})
    for sub in subs:
        await sub.rec.wait("publication", pub_with(data))
    # A series keeps its order on both workers, and a large one (60 KB, just
    # under pubsub.max_publication_bytes = 64 KiB) arrives whole.
    big = {"big": "x" * 60000}
    series = [{"seq": i} for i in range(20)] + [big]
    for d in series:
        await api_ok("publish", {"channel": channel, "data": d})
    for sub in subs:
        await sub.rec.wait("publication", pub_with(big))
        got = [p.pub.data for p in sub.rec.of("publication")][1:]
        check(got == series, f"{sub.rec.label}: series arrived as {str(got)[:300]}")
    print(f"    ({len(subs)} clients, per worker {per_worker})")


async def t_client_publish_allowed(s: Session):
    """Client publish where the namespace allows it reaches the other
    subscriber (and the publisher), with the publisher's info."""
    channel = ch("chat:room")
    a = await s.connected("anon-publisher")
    b = await s.connected("user-reader", token=user_token("reader-py"))
    sa = await s.subscribed(a, channel)
    sb = await s.subscribed(b, channel)
    data = {"text": "from python", "k": [1, {"x": None}]}
    await sa.publish(data)
    got = await sb.rec.wait("publication", pub_with(data))
    check(got.pub.info is not None, "client publication without info")
    check(got.pub.info.client == a.client_id, f"info.client {got.pub.info.client} != {a.client_id}")
    check(got.pub.info.user == "", f"anonymous publisher's info.user {got.pub.info.user!r}")
    await sa.rec.wait("publication", pub_with(data))
    # A user publishing: info.user is the token's sub.
    data2 = {"text": "from user"}
    await b.publish(channel, data2)
    got2 = await sa.rec.wait("publication", pub_with(data2))
    check(got2.pub.info is not None and got2.pub.info.user == "reader-py", f"info {got2.pub.info}")


async def t_client_publish_forbidden(s: Session):
    """Publish refused with 103 where the namespace does not allow it, 102
    in an unknown namespace; nothing is delivered."""
    c = await s.connected("anon")
    channel = ch("ro:feed")
    sub = await s.subscribed(c, channel)
    try:
        await sub.publish({"nope": 1})
        raise Failure("publish to ro: succeeded, want ReplyError 103")
    except ReplyError as e:
        check((e.code, e.message) == (103, "permission denied"), f"got {e}")
    await quiet(sub.rec, "publication")
    try:
        await c.publish(ch("nope:x"), {"nope": 1})
        raise Failure("publish to nope: succeeded, want ReplyError 102")
    except ReplyError as e:
        check((e.code, e.message) == (102, "unknown channel"), f"got {e}")
    check(c.state == ClientState.CONNECTED, f"client state after refusals: {c.state}")


async def t_subscribe_refused(s: Session):
    """Subscribe refused: 103 (namespace forbids client subscription, and
    anonymous in a users-only namespace), 102 (unknown namespace); the
    subscription ends unsubscribed with that code, the client stays."""
    anon = await s.connected("anon")
    for channel, code, reason in [
        (ch("secret:x"), 103, "permission denied"),
        (ch("nope:x"), 102, "unknown channel"),
        (ch("members:x"), 103, "permission denied"),
    ]:
        sub = s.sub(anon, channel)
        await sub.subscribe()
        u = await sub.rec.wait("unsubscribed")
        check((u.code, u.reason) == (code, reason), f"{channel}: unsubscribed {u}, want {code} {reason}")
        check(sub.state == SubscriptionState.UNSUBSCRIBED, f"{channel}: state {sub.state}")
        check(not sub.rec.of("subscribed"), f"{channel}: subscribed anyway")
    check(anon.state == ClientState.CONNECTED, f"client state: {anon.state}")
    # A user (token) may subscribe to members:.
    user = await s.connected("user", token=user_token("member-py"))
    await s.subscribed(user, ch("members:x"))


async def t_jwt_connect(s: Session):
    """Connect with a valid HS256 token (sub, exp): connected, the user id
    is the token's sub."""
    c = await s.connected("jwt", token=user_token("alice-py"))
    channel = ch("chat:jwt")
    sub = await s.subscribed(c, channel)
    await sub.publish({"who": "alice"})
    p = await sub.rec.wait("publication", pub_with({"who": "alice"}))
    check(p.pub.info is not None and p.pub.info.user == "alice-py", f"info {p.pub.info}")


async def t_jwt_channels_claim(s: Session):
    """A token's `channels` claim subscribes server-side (even in a
    namespace clients may not subscribe to): the client-level subscribed
    event fires and API publications arrive as server-side publications."""
    c1, c2 = ch("secret:srv"), ch("srvnews")
    c = s.client("jwt-channels", token=user_token("bob-py", channels=[c1, c2]))
    await asyncio.wait_for(c.connect(), WAIT)
    await c.rec.wait("connected")
    for channel in (c1, c2):
        await c.rec.wait("server_subscribed", lambda x, channel=channel: x.channel == channel)
    for channel in (c1, c2):
        data = {"server_side": channel}
        await api_ok("publish", {"channel": channel, "data": data})
        p = await c.rec.wait(
            "server_publication",
            lambda x, channel=channel, data=data: x.channel == channel and x.pub.data == data,
        )
        check(p.pub.data == data, f"data {p.pub.data!r}")


async def t_bad_signature(s: Session):
    """A token with a bad signature: disconnected 3500 "invalid token",
    terminal (centrifuge disconnect.go DisconnectInvalidToken)."""
    c = s.client("bad-sig", token=jwt({"sub": "mallory", "exp": int(time.time()) + 600}, "wrong-secret"))
    await asyncio.wait_for(c.connect(), WAIT)
    d = await c.rec.wait("disconnected")
    check((d.code, d.reason) == (3500, "invalid token"), f"disconnected {d}, want 3500 invalid token")
    check(not c.rec.of("connected"), "connected with a bad token")
    check(c.state == ClientState.DISCONNECTED, f"state {c.state}")
    # A malformed token too.
    c2 = s.client("garbage", token="not.a.jwt")
    await asyncio.wait_for(c2.connect(), WAIT)
    d2 = await c2.rec.wait("disconnected")
    check((d2.code, d2.reason) == (3500, "invalid token"), f"malformed: disconnected {d2}")


async def t_expired_token(s: Session):
    """An expired token (valid signature): the server answers error 109
    "token expired" to connect. centrifuge-python then (client.py connect
    reply handling) reports on_error(code 13 "connect error", ReplyError 109,
    temporary) and reconnects; with no get_token it cannot get a new token,
    so the next attempt reports on_error(code 12 "bad configuration") and the
    client ends disconnected with code 1 "unauthorized" (no reconnect).
    With get_token, the SDK asks it for a new token and connects."""
    expired = jwt({"sub": "old-py", "exp": int(time.time()) - 60})
    c = s.client("expired", token=expired)
    await asyncio.wait_for(c.connect(), WAIT)
    d = await c.rec.wait("disconnected")
    check((d.code, d.reason) == (1, "unauthorized"), f"disconnected {d}, want 1 unauthorized")
    errs = c.rec.of("error")
    check(len(errs) >= 1, f"no error event: {c.rec.summary()}")
    first = errs[0]
    check(
        first.code == 13 and isinstance(first.error, ReplyError) and first.error.code == 109,
        f"first error {first!r}, want code 13 with ReplyError 109",
    )
    check(first.error.message == "token expired", f"message {first.error.message!r}")
    check(any(e.code == 12 for e in errs), f"no bad-configuration (12) error: {errs!r}")
    check(not c.rec.of("connected"), "connected with an expired token")

    calls = []

    async def get_token():
        calls.append(1)
        return user_token("renewed-py")

    c2 = s.client("expired-get-token", token=expired, get_token=get_token)
    await asyncio.wait_for(c2.connect(), WAIT)
    await c2.rec.wait("connected", timeout=WAIT * 2)
    check(len(calls) == 1, f"get_token called {len(calls)} times")
    e = c2.rec.of("error")[0]
    check(isinstance(e.error, ReplyError) and e.error.code == 109, f"error {e!r}")


async def t_anonymous_not_allowed(s: Session):
    """On the gateway with allow_anonymous = false: no token → disconnected
    3501 "bad request" (centrifuge: "client credentials not found"); a valid
    token connects."""
    c = s.client("noanon", url=NOANON_WS_URL)
    await asyncio.wait_for(c.connect(), WAIT)
    d = await c.rec.wait("disconnected")
    check((d.code, d.reason) == (3501, "bad request"), f"disconnected {d}, want 3501 bad request")
    check(not c.rec.of("connected"), "anonymous client connected")
    c2 = await s.connected("noanon-jwt", url=NOANON_WS_URL, token=user_token("carol-py"))
    await s.subscribed(c2, ch("plain"))


async def t_not_available(s: Session):
    """Commands the gateway does not implement: history, presence,
    presence_stats and rpc rejected with 108 "not available" (as Centrifugo
    with history/presence off and no RPC proxy: centrifuge errors.go
    ErrorNotAvailable)."""
    c = await s.connected("anon")
    sub = await s.subscribed(c, ch("hist"))
    for name, call in [("history", lambda: sub.history(limit=10)), ("presence", sub.presence),
                       ("presence_stats", sub.presence_stats),
                       # Centrifugo without an RPC proxy registers no OnRPC
                       # handler: centrifuge client.go handleRPC → 108.
                       ("rpc", lambda: c.rpc("sum", {"a": 1}))]:
        try:
            await call()
            raise Failure(f"{name} succeeded, want ReplyError 108")
        except ReplyError as e:
            check((e.code, e.message) == (108, "not available"), f"{name}: {e}")
    check(c.state == ClientState.CONNECTED, f"state {c.state}")


async def t_api_http_errors(s: Session):
    """Transport-level API answers as Centrifugo's: 401 (no/wrong key),
    405 (GET), 400 (invalid JSON, empty body), 404 (unknown endpoint);
    application errors in a 200 body."""
    body = {"channel": ch("news"), "data": {"x": 1}}
    status, raw = await http("POST", "/publish", body, {"X-API-Key": "wrong"})
    check(status == 401, f"wrong X-API-Key: {status} {raw!r}")
    status, raw = await http("POST", "/publish", body, {"Authorization": "apikey wrong"})
    check(status == 401, f"wrong Authorization key: {status} {raw!r}")
    status, raw = await http("POST", "/publish", body, {})
    check(status == 401, f"no key: {status} {raw!r}")
    status, raw = await http("GET", "/info", None, {"X-API-Key": API_KEY})
    check(status == 405, f"GET: {status} {raw!r}")
    status, raw = await http("POST", "/publish", b"{not json", {"X-API-Key": API_KEY})
    check(status == 400, f"invalid JSON: {status} {raw!r}")
    status, raw = await http("POST", "/info", b"", {"X-API-Key": API_KEY})
    check(status == 400, f"empty body to /api/info: {status} {raw!r}")
    status, raw = await http("POST", "/nope", {}, {"X-API-Key": API_KEY})
    check(status == 404, f"unknown endpoint: {status} {raw!r}")
    resp = await api("publish", {"channel": ch("nope:x"), "data": {"x": 1}})
    check(resp.get("error", {}).get("code") == 102, f"unknown namespace: {resp}")
    resp = await api("publish", {"channel": "", "data": {"x": 1}})
    check(resp.get("error", {}).get("code") == 107, f"empty channel: {resp}")


async def t_api_broadcast(s: Session):
    """/api/broadcast reaches the subscribers of two channels; per-channel
    results in request order, an unknown namespace as an error item."""
    c = await s.connected("anon")
    c1, c2 = ch("bc1"), ch("chat:bc2")
    s1 = await s.subscribed(c, c1)
    s2 = await s.subscribed(c, c2)
    data = {"broadcast": RUN}
    result = await api_ok("broadcast", {"channels": [c1, c2], "data": data})
    check(result == {"responses": [{"result": {}}, {"result": {}}]}, f"broadcast result {result}")
    await s1.rec.wait("publication", pub_with(data))
    await s2.rec.wait("publication", pub_with(data))
    result = await api_ok("broadcast", {"channels": [c1, ch("nope:y")], "data": {"b": 2}})
    resps = result.get("responses", [])
    check(len(resps) == 2 and resps[0] == {"result": {}}, f"mixed broadcast {result}")
    check(resps[1].get("error", {}).get("code") == 102, f"mixed broadcast {result}")
    await s1.rec.wait("publication", pub_with({"b": 2}))


async def t_api_subscribe_unsubscribe(s: Session):
    """/api/subscribe with user: a server-side subscription the SDK sees
    (client-level subscribed event, publications); /api/unsubscribe ends it
    (client-level unsubscribed event) and ends a client-side subscription
    with unsubscribed 2000 "server unsubscribe"."""
    user = f"dave-py{RUN}"
    c = await s.connected("jwt", token=user_token(user))
    channel = ch("secret:api")
    await api_ok("subscribe", {"user": user, "channel": channel})
    await c.rec.wait("server_subscribed", lambda x: x.channel == channel)
    await api_ok("publish", {"channel": channel, "data": {"n": 1}})
    await c.rec.wait("server_publication", lambda x: x.channel == channel and x.pub.data == {"n": 1})
    await api_ok("unsubscribe", {"user": user, "channel": channel})
    await c.rec.wait("server_unsubscribed", lambda x: x.channel == channel)
    await api_ok("publish", {"channel": channel, "data": {"n": 2}})
    await quiet(c.rec, "server_publication", lambda x: x.pub.data == {"n": 2})
    # A client-side subscription ended by the API.
    own = ch("own")
    sub = await s.subscribed(c, own)
    await api_ok("unsubscribe", {"user": user, "channel": own})
    u = await sub.rec.wait("unsubscribed")
    check((u.code, u.reason) == (2000, "server unsubscribe"), f"unsubscribed {u}")
    check(c.state == ClientState.CONNECTED, f"state {c.state}")


async def t_api_disconnect(s: Session):
    """/api/disconnect: default 3503 "force disconnect" for a user; a given
    code and reason (terminal 4500-4999 range); by client id; other clients
    stay connected."""
    u1, u2 = f"erin-py{RUN}", f"frank-py{RUN}"
    a = await s.connected("default", token=user_token(u1))
    b = await s.connected("custom", token=user_token(u2))
    bystander = await s.connected("bystander")
    await api_ok("disconnect", {"user": u1})
    d = await a.rec.wait("disconnected")
    check((d.code, d.reason) == (3503, "force disconnect"), f"default: {d}")
    await api_ok("disconnect", {"user": u2, "disconnect": {"code": 4501, "reason": "bye now"}})
    d = await b.rec.wait("disconnected")
    check((d.code, d.reason) == (4501, "bye now"), f"custom: {d}")
    c = await s.connected("by-client-id")
    await api_ok("disconnect", {"client": c.client_id})
    d = await c.rec.wait("disconnected")
    check((d.code, d.reason) == (3503, "force disconnect"), f"by client id: {d}")
    await quiet(bystander.rec, "disconnected")
    check(bystander.state == ClientState.CONNECTED, f"bystander state {bystander.state}")



async def t_subscription_tokens(s: Session):
    """Subscription tokens (HS256, sub = the connection's user, channel):
    a valid one subscribes where clients may not subscribe otherwise
    (secret:, private $ channels); a bad signature → 103; an expired one →
    109, which centrifuge-python without get_token turns into on_error(12
    bad configuration) + unsubscribed(1 "unauthorized"); a token for another
    channel → disconnect 3500 "invalid token" (Centrifugo handler.go
    OnSubscribe: channel mismatch is DisconnectInvalidToken)."""
    user = f"subtok-py{RUN}"
    c = await s.connected("jwt", token=user_token(user))

    def sub_token(channel, ttl=600, secret=SECRET):
        return jwt({"sub": user, "channel": channel, "exp": int(time.time()) + ttl}, secret)

    for channel in (ch("secret:tok"), "$" + ch("priv")):
        sub = s.sub(c, channel, token=sub_token(channel))
        await sub.subscribe()
        await sub.rec.wait("subscribed")
        await api_ok("publish", {"channel": channel, "data": {"tok": channel}})
        await sub.rec.wait("publication", pub_with({"tok": channel}))
    plain = s.sub(c, "$" + ch("notoken"))
    await plain.subscribe()
    u = await plain.rec.wait("unsubscribed")
    check((u.code, u.reason) == (103, "permission denied"), f"private without token: {u}")
    channel = ch("secret:badsig")
    bad = s.sub(c, channel, token=sub_token(channel, secret="wrong"))
    await bad.subscribe()
    u = await bad.rec.wait("unsubscribed")
    check((u.code, u.reason) == (103, "permission denied"), f"bad signature: {u}")
    channel = ch("secret:expired")
    exp = s.sub(c, channel, token=sub_token(channel, ttl=-60))
    await exp.subscribe()
    u = await exp.rec.wait("unsubscribed")
    check((u.code, u.reason) == (1, "unauthorized"), f"expired: {u}")
    check(any(e.code == 12 for e in exp.rec.of("error")), f"expired: errors {exp.rec.of('error')}")
    check(c.state == ClientState.CONNECTED, f"state {c.state}")
    other = s.sub(c, ch("secret:mismatch"), token=sub_token(ch("secret:other")))
    await other.subscribe()
    d = await c.rec.wait("disconnected")
    check((d.code, d.reason) == (3500, "invalid token"), f"mismatch: {d}")


async def t_api_user_on_both_workers(s: Session):
    """One user with connections on both workers: /api/subscribe reaches
    every connection (server-side subscribed event + publications),
    /api/unsubscribe and /api/disconnect too; by client id only that one."""
    user = f"multi-py{RUN}"
    conns = []

    async def per_worker():
        info = await api_ok("info", {})
        return [w["num_users"] for w in info["nodes"][0]["workers"]]

    while len(conns) < 4 or (0 in await per_worker() and len(conns) < 32):
        conns.append(await s.connected(f"m{len(conns)}", token=user_token(user)))
    spread = await per_worker()
    check(0 not in spread, f"user's connections not on both workers: {spread}")
    channel = ch("secret:multi")
    await api_ok("subscribe", {"user": user, "channel": channel})
    for c in conns:
        await c.rec.wait("server_subscribed", lambda x: x.channel == channel)
    await api_ok("publish", {"channel": channel, "data": "to all"})
    for c in conns:
        await c.rec.wait("server_publication", lambda x: x.pub.data == "to all")
    await api_ok("unsubscribe", {"user": user, "channel": channel})
    for c in conns:
        await c.rec.wait("server_unsubscribed", lambda x: x.channel == channel)
    # By client id: only that connection.
    one = conns[-1]
    by_id = ch("secret:one")
    await api_ok("subscribe", {"client": one.client_id, "channel": by_id})
    await one.rec.wait("server_subscribed", lambda x: x.channel == by_id)
    await asyncio.sleep(0.2)
    others = [c for c in conns[:-1] if any(x.channel == by_id for x in c.rec.of("server_subscribed"))]
    check(not others, f"subscribe by client id reached {len(others)} other connections")
    await api_ok("disconnect", {"user": user})
    for c in conns:
        d = await c.rec.wait("disconnected")
        check((d.code, d.reason) == (3503, "force disconnect"), f"{c.rec.label}: {d}")
    print(f"    ({len(conns)} connections of one user, num_users per worker {spread})")


async def t_api_get_without_key(s: Session):
    """Centrifugo checks the method before the key (internal/app/mux.go:
    each /api/<method> route is middleware.Post -> APIKeyAuth -> handler),
    so a GET without a key gets 405, not 401."""
    status, raw = await http("GET", "/publish", None, {})
    # Was a gateway bug (fixed): the gateway answered 401 (it checked the
    # key first); Centrifugo answers 405 (middleware/method.go runs before auth.go).
    check(status == 405, f"GET /api/publish without a key: {status} {raw!r}, want 405")


async def t_api_unknown_endpoint_without_key(s: Session):
    """Only registered endpoints check the key in Centrifugo; anything else
    is the ServeMux's 404 "404 page not found", key or not."""
    status, raw = await http("POST", "/nope", {}, {})
    # Was a gateway bug (fixed): the gateway answered 401; Centrifugo has no route for it,
    # so 404 before any key check (internal/app/mux.go).
    check(status == 404, f"POST /api/nope without a key: {status} {raw!r}, want 404")


async def t_unsubscribe_close_bookkeeping(s: Session):
    """Six subscribers of one channel leave in an interleaved order (client
    unsubscribe, disconnect, API unsubscribe); after each step exactly the
    remaining ones receive a publication (the hub's per-channel lists)."""
    channel = ch("churn")
    users = [f"churn{i}-py{RUN}" for i in range(6)]
    clients = [await s.connected(f"c{i}", token=user_token(u)) for i, u in enumerate(users)]
    subs = [await s.subscribed(c, channel) for c in clients]
    alive = set(range(6))
    step = 0

    async def publish_and_check():
        nonlocal step
        step += 1
        data = {"step": step}
        await api_ok("publish", {"channel": channel, "data": data})
        for i in sorted(alive):
            await subs[i].rec.wait("publication", pub_with(data))
        await asyncio.sleep(0.2)
        for i in set(range(6)) - alive:
            got = [p for p in subs[i].rec.of("publication") if p.pub.data == data]
            check(not got, f"step {step}: subscriber {i} (gone) received {data}")

    await publish_and_check()
    await subs[2].unsubscribe()
    alive.discard(2)
    await publish_and_check()
    await clients[0].disconnect()
    alive.discard(0)
    await publish_and_check()
    await api_ok("unsubscribe", {"user": users[5], "channel": channel})
    await subs[5].rec.wait("unsubscribed")
    alive.discard(5)
    await publish_and_check()
    await subs[2].subscribe()  # back again
    await subs[2].rec.wait("subscribed", lambda c: True)
    await subs[2].ready()
    alive.add(2)
    await publish_and_check()
    await clients[3].disconnect()
    await subs[1].unsubscribe()
    alive -= {1, 3}
    await publish_and_check()
    check(sorted(alive) == [2, 4], f"alive {alive}")


async def t_token_variants(s: Session):
    """A token without exp connects (never expires); a `channels` claim in
    an unknown namespace fails the connect with 102 "unknown channel"
    (Centrifugo handler.go OnClientConnecting), terminal for the SDK."""
    c = await s.connected("no-exp", token=jwt({"sub": "noexp-py"}))
    check(c.state == ClientState.CONNECTED, f"state {c.state}")
    bad = s.client("unknown-ns-claim", token=user_token("gina-py", channels=[ch("nope:srv")]))
    await asyncio.wait_for(bad.connect(), WAIT)
    d = await bad.rec.wait("disconnected")
    check((d.code, d.reason) == (102, "unknown channel"), f"disconnected {d}, want 102 unknown channel")
    check(not bad.rec.of("connected"), "connected with an unknown-namespace channels claim")


async def t_keepalive_pings(s: Session):
    """App-level pings ({} every 2 s: pubsub.ping_interval_ms in the test
    config) answered with pongs keep the connection: no reconnect over more
    than two intervals, and it still receives."""
    c = await s.connected("idle")
    sub = await s.subscribed(c, ch("idle"))
    before = len(c.rec.events)
    await asyncio.sleep(4.5)
    changes = [e for e in c.rec.events[before:] if e[0] in ("connecting", "disconnected")]
    check(not changes, f"state changes while idle: {changes}")
    await api_ok("publish", {"channel": sub.channel, "data": "still here"})
    await sub.rec.wait("publication", pub_with("still here"))


async def t_api_publish_multiline_json(s: Session):
    """API publication data with formatting newlines (pretty-printed JSON)
    reaches subscribers with the same value, and the client stays."""
    c = await s.connected("anon")
    sub = await s.subscribed(c, ch("pretty"))
    data = {"a": 1, "b": [2, "x\ny"]}
    body = ('{"channel": %s,\n "data": %s\n}' % (json.dumps(sub.channel), json.dumps(data, indent=2))).encode()
    status, raw = await http("POST", "/publish", body, {"X-API-Key": API_KEY})
    check((status, raw) == (200, b'{"result":{}}'), f"publish: {status} {raw!r}")
    # Was a gateway bug (fixed): the push carried the raw `data` verbatim, raw newlines
    # included ('{"push":{"channel":"..","pub":{"data":{\n  "a": 1,...}}}}'),
    # so the frame's "\n"-separated lines are not JSON: centrifuge-python
    # (codecs.py decode_replies) fails and disconnects for good with code 2.
    # Centrifugo strips raw newlines from Raw payloads when encoding
    # (centrifugal/protocol raw.go Raw.MarshalJSON), keeping the value.
    try:
        await sub.rec.wait("publication", pub_with(data))
    except Failure as e:
        raise Failure(f"{e}\n        client events: {c.rec.summary()}") from None
    check(c.state == ClientState.CONNECTED, f"state {c.state}: {c.rec.summary()}")

CHECKS = [
    t_anonymous_subscribe_api_publish,
    t_fanout_both_workers,
    t_client_publish_allowed,
    t_client_publish_forbidden,
    t_subscribe_refused,
    t_jwt_connect,
    t_jwt_channels_claim,
    t_bad_signature,
    t_expired_token,
    t_anonymous_not_allowed,
    t_not_available,
    t_api_http_errors,
    t_api_broadcast,
    t_api_subscribe_unsubscribe,
    t_api_disconnect,
    t_token_variants,
    t_keepalive_pings,
    t_unsubscribe_close_bookkeeping,
    t_subscription_tokens,
    t_api_user_on_both_workers,
    t_api_get_without_key,
    t_api_unknown_endpoint_without_key,
    t_api_publish_multiline_json,
]


async def main() -> int:
    only = set(sys.argv[1:])
    passed = failed = 0
    for fn in CHECKS:
        name = fn.__name__[2:]
        if only and name not in only:
            continue
        s = Session(name)
        t0 = time.monotonic()
        try:
            await asyncio.wait_for(fn(s), CHECK_TIMEOUT)
            passed += 1
            print(f"  ok    {name} ({time.monotonic() - t0:.1f}s)", flush=True)
        except Exception as e:  # noqa: BLE001 - report and go on
            failed += 1
            print(f"  FAIL  {name} ({time.monotonic() - t0:.1f}s): {type(e).__name__}: {e}", flush=True)
            if not isinstance(e, (Failure, asyncio.TimeoutError)):
                traceback.print_exc()
        finally:
            await s.close()
    print(f"python: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
