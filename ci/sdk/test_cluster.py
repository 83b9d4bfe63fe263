#!/usr/bin/env python3
"""A gateway cluster as a new user runs it (issue 14), checked with the real
centrifuge-python SDK: three nodes from config/cluster-redis.toml or
config/cluster-nats.toml (`gateway --config ... --listen ... --admin-listen
...`, only the broker address changed), subscribers spread over them, and for
Redis a broker killed and restarted mid-run. Run by ci/sdk-tests.sh, which
starts the broker and the nodes and sets:

  SDK_CLUSTER_BROKER   redis | nats
  SDK_CLUSTER_LISTEN   the nodes' listen addresses (space separated; with the
                       config's default `broker.node` they are the node names)
  SDK_CLUSTER_ADMIN    the nodes' admin addresses, same order (API, /metrics)
  SDK_GATEWAY_CONFIG   the nodes' config (API key)
  For redis (the outage check), the broker as the script started it:
  SDK_CLUSTER_REDIS_PIDFILE  file holding redis-server's pid; a restarted
                             one's pid is written there (the script stops it)
  SDK_CLUSTER_REDIS_ARGV     its command line (JSON list), to restart it
  SDK_CLUSTER_REDIS_LOG      its log file (appended to)

Every check asserts and every wait is bounded. Prints one line per check and
a closing "cluster-py: N passed, N failed"; exits 1 on any failure. A failed
check stops the run (the later ones build on its subscribers).
"""

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
import tomllib
import uuid

from sdk_checks import ClientEvents, Failure, Recorder, SubEvents, check, http_request
from centrifuge import (
    Client,
    ClientState,
    SubscriptionState,
)

BROKER = os.environ["SDK_CLUSTER_BROKER"]
LISTEN = os.environ["SDK_CLUSTER_LISTEN"].split()
ADMIN = os.environ["SDK_CLUSTER_ADMIN"].split()
with open(os.environ["SDK_GATEWAY_CONFIG"], "rb") as f:
    API_KEY = tomllib.load(f)["api"]["key"]
assert len(LISTEN) == len(ADMIN) >= 2, (LISTEN, ADMIN)
NODES = range(len(LISTEN))

logging.basicConfig(level=logging.DEBUG if os.environ.get("SDK_DEBUG") else logging.CRITICAL)

WAIT = 5.0  # one expected event
RECOVER = 15.0  # the broker back -> nodes healthy, subscribers resubscribed
QUIET = 0.3  # how long "nothing more arrives" is watched
PER_NODE = 4  # subscribers per node
RUN = uuid.uuid4().hex[:8]
CHANNEL = f"cluster-{BROKER}-{RUN}"


async def until(what: str, fn, timeout: float = WAIT, every: float = 0.05):
    """Polls the coroutine function `fn` until it returns a truthy value;
    fails with `what` (and the last value) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        got = await fn()
        if got:
            return got
        if time.monotonic() > deadline:
            raise Failure(f"{what} (not within {timeout}s; last: {got!r})")
        await asyncio.sleep(every)


# ---------------------------------------------------------------------------
# Plain HTTP: API, /healthz, /metrics (no proxies from the environment).



async def http(method: str, url: str, body=None, headers=None):
    return await asyncio.to_thread(http_request, method, url, body, headers or {})


async def api(node: int, endpoint: str, body: dict) -> dict:
    """POST http://ADMIN/api/ENDPOINT with the key; asserts HTTP 200."""
    url = f"http://{ADMIN[node]}/api/{endpoint}"
    headers = {"X-API-Key": API_KEY, "Content-Type": "application/json"}
    status, raw = await http("POST", url, body, headers)
    check(status == 200, f"node {node} /api/{endpoint}: HTTP {status} {raw!r}")
    return json.loads(raw)


async def publish(node: int, data) -> None:
    resp = await api(node, "publish", {"channel": CHANNEL, "data": data})
    check(resp == {"result": {}}, f"node {node} /api/publish {data!r}: {resp!r}")


async def health(node: int) -> int:
    status, _ = await http("GET", f"http://{LISTEN[node]}/healthz")
    return status


async def metric(node: int, name: str) -> float:
    """The sum of a metric's samples on the node's /metrics (all labels)."""
    status, raw = await http("GET", f"http://{ADMIN[node]}/metrics")
    check(status == 200, f"node {node} /metrics: HTTP {status}")
    values = [
        float(line.split()[-1])
        for line in raw.decode().splitlines()
        if line.startswith(name) and line[len(name)] in " {"
    ]
    check(values, f"node {node} /metrics has no {name}")
    return sum(values)


# ---------------------------------------------------------------------------
# SDK clients whose events are recorded in order.


def new_client(node: int, label: str) -> Client:
    rec = Recorder(f"{label}@node{node}")
    c = Client(
        f"ws://{LISTEN[node]}/connection/websocket",
        events=ClientEvents(rec),
        proxy=None,
        min_reconnect_delay=0.2,
        max_reconnect_delay=1.0,
    )
    c.rec, c.node = rec, node
    return c


def new_sub(c: Client, channel: str = CHANNEL):
    rec = Recorder(f"{c.rec.label}/{channel}")
    # Short resubscribe backoff: a subscribe refused while the broker is down
    # (error 100, temporary) is retried soon after it is back.
    s = c.new_subscription(
        channel, events=SubEvents(rec), min_resubscribe_delay=0.1, max_resubscribe_delay=0.5
    )
    s.rec, s.node, s.client = rec, c.node, c
    return s


def datas(sub) -> list:
    return [p.pub.data for p in sub.rec.of("publication")]


async def all_received(subs, want: list, timeout: float = WAIT) -> None:
    """Every subscriber has received at least the publications `want` (any
    order for now): waits, bounded, then a quiet moment for duplicates."""

    async def done():
        return all(all(d in datas(s) for d in want) for s in subs)

    try:
        await until("publications delivered", done, timeout)
    except Failure:
        missing = {s.rec.label: [d for d in want if d not in datas(s)] for s in subs}
        missing = {k: v for k, v in missing.items() if v}
        raise Failure(f"not delivered within {timeout}s: {str(missing)[:1500]}") from None
    await asyncio.sleep(QUIET)


class State:
    """What the checks share: the clients and subscriptions of the run."""

    clients: list = []
    subs: list = []
    late = None  # subscribed while Redis was down
    seen: int = 0  # publications each subscriber had before the current step


S = State()


# ---------------------------------------------------------------------------
# Checks.


async def t_info_lists_every_node():
    """/api/info of every node lists the three nodes, named by their listen
    addresses (the config's default broker.node)."""
    for n in NODES:

        async def names():
            info = await api(n, "info", {})
            got = sorted(x["name"] for x in info["result"]["nodes"])
            return got if got == sorted(LISTEN) else None

        # Nodes hear of each other through beacons (broker.info_interval_ms).
        await until(f"node {n} /api/info lists {sorted(LISTEN)}", names)
    for n in NODES:
        check(await health(n) == 200, f"node {n} /healthz {await health(n)}")
        check(await metric(n, "gateway_broker_up") == 1, f"node {n} gateway_broker_up != 1")


async def t_subscribers_on_every_node():
    """PER_NODE subscribers on each node; a publication through node 0 made
    right after the last subscribe reply (no sleep) reaches all of them."""
    for n in NODES:
        for i in range(PER_NODE):
            c = new_client(n, f"c{i}")
            S.clients.append(c)
            await asyncio.wait_for(c.connect(), WAIT)
    subs = [new_sub(c) for c in S.clients]
    # All subscribe at once, so each node's first subscriber (whose reply
    # waits for the broker's confirmation) races the others.
    await asyncio.gather(*(s.subscribe() for s in subs))
    await asyncio.wait_for(asyncio.gather(*(s.ready() for s in subs)), WAIT)
    for s in subs:
        check(s.state == SubscriptionState.SUBSCRIBED, f"{s.rec.label}: {s.state}")
    S.subs = subs
    first = {"first": RUN}
    await publish(0, first)
    await all_received(subs, [first])
    for s in subs:
        check(datas(s) == [first], f"{s.rec.label}: received {datas(s)!r}")
    print(f"    ({len(subs)} subscribers, {PER_NODE} per node)")


async def api_series(tag: str, count: int = 10) -> None:
    """`count` publications through each node's API (interleaved); every
    subscriber gets each exactly once, each node's in publication order,
    and all subscribers the same overall order (one broker order)."""
    series = {n: [{"tag": tag, "via": n, "seq": k} for k in range(count)] for n in NODES}
    for k in range(count):
        for n in NODES:
            await publish(n, series[n][k])
    want = [d for n in NODES for d in series[n]]
    await all_received(S.subs, want)
    orders = []
    for s in S.subs:
        got = datas(s)[S.seen :]
        check(len(got) == len(want), f"{s.rec.label}: {len(got)} publications, want {len(want)}: {got}")
        for n in NODES:
            mine = [d for d in got if d["via"] == n]
            check(mine == series[n], f"{s.rec.label}: node {n}'s publications arrived as {mine}")
        orders.append(got)
    check(all(o == orders[0] for o in orders), "subscribers saw different orders")
    S.seen += len(want)


async def t_api_publish_through_every_node():
    """10 publications through each node's server API reach every subscriber
    on every node exactly once and in order."""
    S.seen = len(datas(S.subs[0]))
    await api_series("api")


async def t_client_publish_across_nodes():
    """A client publication on one node reaches the subscribers on all nodes
    (the publisher's own included), with the publisher's client id."""
    for n in NODES:
        publisher = next(s for s in S.subs if s.node == n)
        client = publisher.client
        data = {"from-client-on": n, "run": RUN}
        await publisher.publish(data)
        await all_received(S.subs, [data])
        for s in S.subs:
            got = [p for p in s.rec.of("publication") if p.pub.data == data]
            check(len(got) == 1, f"{s.rec.label}: {len(got)} copies of {data}")
            info = got[0].pub.info
            check(
                info is not None and info.client == client.client_id,
                f"{s.rec.label}: info {info}, want client {client.client_id}",
            )
    S.seen = len(datas(S.subs[0]))


# --- Redis killed and restarted -----------------------------------------------------


def redis_pid() -> int:
    with open(os.environ["SDK_CLUSTER_REDIS_PIDFILE"]) as f:
        return int(f.read().strip())


def redis_port() -> int:
    argv = json.loads(os.environ["SDK_CLUSTER_REDIS_ARGV"])
    return int(argv[argv.index("--port") + 1])


def redis_answers() -> bool:
    try:
        with socket.create_connection(("127.0.0.1", redis_port()), timeout=0.5) as s:
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


async def t_redis_outage():
    """Redis SIGKILLed: every node degraded (/healthz 503, gateway_broker_up
    0) and refuses API publishes with error 100; the SDK clients stay
    connected and a new subscription gets error 100 (temporary), which the
    SDK retries by itself (refused again). Redis
    restarted on the same port: the nodes recover (/healthz 200), every
    subscription is told 2500 "insufficient state" and centrifuge-python
    subscribes again by itself (on_subscribing(2500) then on_subscribed, no
    on_unsubscribed), publications through every node reach everyone again,
    and the counters show the outage (reconnects, resynced, unconfirmed)."""
    before = {n: await metric(n, "gateway_broker_reconnects_total") for n in NODES}
    resynced_before = {n: await metric(n, "gateway_broker_resynced_total") for n in NODES}
    marks = {id(s): len(s.rec.events) for s in S.subs}
    os.kill(redis_pid(), signal.SIGKILL)
    await until("redis-server gone", lambda: asyncio.to_thread(lambda: not redis_answers()))
    for n in NODES:
        await until(f"node {n} /healthz 503", lambda: _is(health(n), 503))
        await until(f"node {n} gateway_broker_up 0", lambda: _is(metric(n, "gateway_broker_up"), 0))
    for n in NODES:
        resp = await api(n, "publish", {"channel": CHANNEL, "data": {"lost": n}})
        check(resp.get("error", {}).get("code") == 100, f"node {n} publish while down: {resp}")
    late_client = new_client(1, "late")
    S.clients.append(late_client)
    await asyncio.wait_for(late_client.connect(), WAIT)
    late = S.late = new_sub(late_client, f"{CHANNEL}-late")
    await late.subscribe()

    async def refused_twice():
        errs = [e for e in late.rec.of("error") if getattr(e.error, "code", None) == 100]
        return errs if len(errs) >= 2 else None

    # Twice: the SDK retries a temporary error by itself (and the outage lasts
    # over a few of the nodes' reconnect attempts).
    errs = await until("late subscription refused with error 100, then again on the SDK's retry", refused_twice)
    check(all(e.error.temporary for e in errs), f"error 100 not temporary: {errs}")
    check(not late.rec.of("unsubscribed"), f"late subscription ended: {late.rec.summary()}")
    check(late.state == SubscriptionState.SUBSCRIBING, f"late subscription: {late.state}")
    await until(
        "node 1 gateway_broker_unconfirmed_total >= 1",
        lambda: _ge(metric(1, "gateway_broker_unconfirmed_total"), 1),
    )

    # Back on the same port.
    argv = json.loads(os.environ["SDK_CLUSTER_REDIS_ARGV"])
    with open(os.environ["SDK_CLUSTER_REDIS_LOG"], "ab") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, cwd="/tmp"
        )
    with open(os.environ["SDK_CLUSTER_REDIS_PIDFILE"], "w") as f:
        f.write(f"{proc.pid}\n")
    await until("redis-server restarted", lambda: asyncio.to_thread(redis_answers))
    check(proc.poll() is None, f"restarted redis-server exited ({proc.returncode})")
    t0 = time.monotonic()
    for n in NODES:
        await until(f"node {n} /healthz 200 again", lambda: _is(health(n), 200), RECOVER)
    recovered = time.monotonic() - t0

    def resubscribed(s) -> bool:
        return s.state == SubscriptionState.SUBSCRIBED and len(s.rec.of("subscribed")) >= 2

    async def all_resubscribed():
        return all(resubscribed(s) for s in S.subs)

    try:
        await until("every subscription resubscribed", all_resubscribed, RECOVER)
    except Failure:
        behind = [f"{s.rec.label}: {s.rec.summary()[-300:]}" for s in S.subs if not resubscribed(s)]
        raise Failure(f"{len(behind)} not resubscribed: {behind[:3]}") from None
    for s in S.subs:
        new = s.rec.events[marks[id(s)] :]
        kinds = [k for k, _ in new]
        check(
            kinds == ["subscribing", "subscribed"],
            f"{s.rec.label}: events during the outage {[(k, c) for k, c in new]}",
        )
        sub_ctx = new[0][1]
        check(
            (sub_ctx.code, sub_ctx.reason) == (2500, "insufficient state"),
            f"{s.rec.label}: subscribing {sub_ctx}",
        )
    for c in S.clients:
        check(not c.rec.of("disconnected"), f"{c.rec.label} disconnected: {c.rec.of('disconnected')}")
        check(c.state == ClientState.CONNECTED, f"{c.rec.label}: {c.state}")
    # Publications again, right away: nothing of the outage arrives.
    await api_series("after")
    for s in S.subs:
        lost = [d for d in datas(s) if "lost" in d]
        check(not lost, f"{s.rec.label}: received publications refused while down: {lost}")
    for n in NODES:
        r = await metric(n, "gateway_broker_reconnects_total")
        check(r >= 1 and r > before[n], f"node {n} gateway_broker_reconnects_total {before[n]} -> {r}")
        rs = await metric(n, "gateway_broker_resynced_total")
        check(rs >= 1 and rs > resynced_before[n], f"node {n} gateway_broker_resynced_total {resynced_before[n]} -> {rs}")
        check(await metric(n, "gateway_broker_up") == 1, f"node {n} gateway_broker_up != 1")
    print(f"    (nodes healthy {recovered:.1f}s after redis-server was back)")


async def t_redis_late_subscription():
    """The subscription refused (error 100) while Redis was down succeeds
    on the SDK's own retries once the nodes are back, and receives."""
    late = S.late
    # Was a gateway bug (fixed in 1654af1): in about 2 runs of 3 the node
    # never answered the retried subscribe once the broker was back; the
    # node held a broker subscription for the channel whose bookkeeping had
    # expired, so no confirmation was ever sent.
    try:
        await asyncio.wait_for(late.ready(), RECOVER)
    except Exception as e:  # noqa: BLE001 - the SDK's own timeout included
        raise Failure(f"late subscription not subscribed ({type(e).__name__}); its events: ...{late.rec.summary()[-500:]}") from None
    data = {"late": RUN}
    await api(2, "publish", {"channel": late.channel, "data": data})
    await all_received([late], [data])
    check(datas(late) == [data], f"late subscriber received {datas(late)}")


async def _is(coro, want) -> bool:
    return (await coro) == want


async def _ge(coro, least) -> bool:
    return (await coro) >= least


CHECKS = [
    t_info_lists_every_node,
    t_subscribers_on_every_node,
    t_api_publish_through_every_node,
    t_client_publish_across_nodes,
]
if BROKER == "redis":
    CHECKS += [t_redis_outage, t_redis_late_subscription]


async def main() -> int:
    passed = failed = 0
    try:
        for fn in CHECKS:
            name = f"{BROKER}: {fn.__name__[2:]}"
            t0 = time.monotonic()
            try:
                await asyncio.wait_for(fn(), 45.0)
                passed += 1
                print(f"  ok    {name} ({time.monotonic() - t0:.1f}s)", flush=True)
            except Exception as e:  # noqa: BLE001 - report, then stop
                failed += 1
                print(f"  FAIL  {name} ({time.monotonic() - t0:.1f}s): {type(e).__name__}: {e}", flush=True)
                break
    finally:
        for c in S.clients:
            try:
                await asyncio.wait_for(c.disconnect(), WAIT)
            except Exception:  # noqa: BLE001 - best effort teardown
                pass
    print(f"cluster-py: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed == len(CHECKS) else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
