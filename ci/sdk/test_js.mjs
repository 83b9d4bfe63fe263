// End-to-end tests of the gateway's pubsub route with the real centrifuge-js
// SDK (pinned in package.json / package-lock.json) under Node with `ws`, plus
// the server HTTP API with fetch. Run by ci/sdk-tests.sh, which starts the
// gateways and sets:
//
//   SDK_WS_URL          ws://ADDR/connection/websocket  (ci/sdk/gateway.toml, 2 workers)
//   SDK_API_URL         http://ADMIN/api                (its server API)
//   SDK_NOANON_WS_URL   ws://ADDR/connection/websocket  (ci/sdk/gateway-noanon.toml)
//   SDK_GATEWAY_CONFIG  path of gateway.toml (token secret, API key)
//   SDK_NODE_PREFIX     directory holding node_modules (default: this one)
//
// Every check asserts and every wait is bounded (a whole check is cut off
// after CHECK_TIMEOUT ms). Prints one line per check and a closing
// "js: N passed, N failed"; exits 1 on any failure.

import assert from 'node:assert/strict';
import { createHmac, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
// The packages live in a private node_modules (see ci/sdk-tests.sh); resolve
// them from there rather than from this file's directory.
const require = createRequire(join(process.env.SDK_NODE_PREFIX || here, 'package.json'));
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const WS_URL = process.env.SDK_WS_URL;
const API_URL = (process.env.SDK_API_URL || '').replace(/\/$/, '');
const NOANON_WS_URL = process.env.SDK_NOANON_WS_URL;
const CONFIG_TEXT = readFileSync(process.env.SDK_GATEWAY_CONFIG, 'utf8');
// The two string keys needed from the TOML (a full TOML parser is not worth
// a dependency): `token_hmac_secret` under [pubsub], `key` under [api].
function tomlString(section, key) {
  const body = CONFIG_TEXT.split(/^\[/m).find((s) => s.startsWith(`${section}]`));
  const m = body && body.match(new RegExp(`^${key}\\s*=\\s*"([^"]*)"`, 'm'));
  if (!m) throw new Error(`no ${section}.${key} in ${process.env.SDK_GATEWAY_CONFIG}`);
  return m[1];
}
const SECRET = tomlString('pubsub', 'token_hmac_secret');
const API_KEY = tomlString('api', 'key');

const WAIT = 5000; // one expected event
const CHECK_TIMEOUT = 30000; // one whole check
const QUIET = 500; // how long "nothing arrives" is watched
const RUN = randomBytes(4).toString('hex');
const ch = (name) => `${name}-js${RUN}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// --- HS256 JWT, signed here --------------------------------------------------

const b64url = (buf) => Buffer.from(buf).toString('base64url');
function jwt(claims, secret = SECRET) {
  const head = b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }));
  const body = b64url(JSON.stringify(claims));
  const sig = createHmac('sha256', secret).update(`${head}.${body}`).digest();
  return `${head}.${body}.${b64url(sig)}`;
}
const now = () => Math.floor(Date.now() / 1000);
const userToken = (sub, extra = {}) => jwt({ sub, exp: now() + 600, ...extra });

// --- server API ----------------------------------------------------------------

async function http(method, path, body, headers = {}) {
  const init = { method, headers: { 'Content-Type': 'application/json', ...headers }, signal: AbortSignal.timeout(WAIT) };
  if (body !== undefined) init.body = typeof body === 'string' ? body : JSON.stringify(body);
  const r = await fetch(API_URL + path, init);
  return { status: r.status, text: await r.text() };
}

async function api(endpoint, body, auth = 'x-api-key') {
  const headers = auth === 'x-api-key' ? { 'X-API-Key': API_KEY } : { Authorization: `apikey ${API_KEY}` };
  const r = await http('POST', `/${endpoint}`, body, headers);
  assert.equal(r.status, 200, `/api/${endpoint} ${JSON.stringify(body)}: HTTP ${r.status} ${r.text}`);
  return JSON.parse(r.text);
}

async function apiOk(endpoint, body, auth) {
  const resp = await api(endpoint, body, auth);
  assert.ok(!('error' in resp) && 'result' in resp, `/api/${endpoint}: ${JSON.stringify(resp)}`);
  return resp.result;
}

// --- recording SDK events ----------------------------------------------------------

class Recorder {
  constructor(label, emitter, kinds) {
    this.label = label;
    this.events = [];
    this.waiters = new Set();
    for (const kind of kinds) {
      emitter.on(kind, (ctx) => {
        this.events.push([kind, ctx]);
        for (const w of this.waiters) w();
      });
    }
  }

  of(kind) {
    return this.events.filter(([k]) => k === kind).map(([, c]) => c);
  }

  // The first `kind` event matching `pred`, waiting for it.
  wait(kind, pred = () => true, timeout = WAIT) {
    return new Promise((resolve, reject) => {
      const look = () => {
        const hit = this.events.find(([k, c]) => k === kind && pred(c));
        if (!hit) return false;
        this.waiters.delete(look);
        clearTimeout(timer);
        resolve(hit[1]);
        return true;
      };
      const timer = setTimeout(() => {
        this.waiters.delete(look);
        reject(new assert.AssertionError({
          message: `${this.label}: no '${kind}' event within ${timeout}ms; events: ${this.summary()}`,
        }));
      }, timeout);
      if (!look()) this.waiters.add(look);
    });
  }

  summary() {
    return JSON.stringify(this.events.map(([k, c]) => [k, c && (c.channel !== undefined ? { ...c } : c)])).slice(0, 1500);
  }
}

const CLIENT_EVENTS = ['connecting', 'connected', 'disconnected', 'error', 'subscribed', 'unsubscribed', 'publication'];
const SUB_EVENTS = ['subscribing', 'subscribed', 'unsubscribed', 'publication', 'error'];

class Session {
  constructor(name) {
    this.name = name;
    this.clients = [];
  }

  client(label, { url = WS_URL, token = '', getToken } = {}) {
    const opts = { websocket: WebSocket, token, minReconnectDelay: 200, maxReconnectDelay: 1000, timeout: WAIT };
    if (getToken) opts.getToken = getToken;
    const c = new Centrifuge(url, opts);
    c.rec = new Recorder(`${this.name}/${label}`, c, CLIENT_EVENTS);
    this.clients.push(c);
    return c;
  }

  async connected(label, opts) {
    const c = this.client(label, opts);
    c.connect();
    const ctx = await c.rec.wait('connected');
    c.clientId = ctx.client;
    assert.equal(c.state, 'connected', `${label}: state ${c.state}`);
    return c;
  }

  static sub(c, channel) {
    const s = c.newSubscription(channel);
    s.rec = new Recorder(`${c.rec.label}/${channel}`, s, SUB_EVENTS);
    return s;
  }

  async subscribed(c, channel) {
    const s = Session.sub(c, channel);
    s.subscribe();
    await s.rec.wait('subscribed');
    assert.equal(s.state, 'subscribed', `${channel}: state ${s.state}`);
    return s;
  }

  close() {
    for (const c of this.clients) {
      try { c.disconnect(); } catch { /* best effort */ }
    }
  }
}

async function quiet(rec, kind, pred = () => true) {
  await sleep(QUIET);
  const got = rec.of(kind).filter(pred);
  assert.equal(got.length, 0, `${rec.label}: unexpected ${kind}: ${JSON.stringify(got)}`);
}

const deepEq = (a, b) => {
  try { assert.deepStrictEqual(a, b); return true; } catch { return false; }
};
const pubWith = (data) => (ctx) => deepEq(ctx.data, data);

async function rejectsWith(promise, code, message, what) {
  let result;
  try {
    result = await promise;
  } catch (e) {
    assert.equal(e.code, code, `${what}: rejected with ${JSON.stringify(e)}, want code ${code}`);
    assert.equal(e.message, message, `${what}: rejected with ${JSON.stringify(e)}`);
    return;
  }
  assert.fail(`${what}: resolved ${JSON.stringify(result)}, want rejection ${code}`);
}

// --- checks ------------------------------------------------------------------------

const checks = {
  // Anonymous connect with a subscription made before connect(): the SDK
  // pipelines connect + subscribe in one WebSocket frame. API publications
  // with X-API-Key and Authorization: apikey arrive with the exact data.
  async anonymous_pipelined_subscribe_api_publish(s) {
    const c = s.client('anon');
    const channel = ch('news');
    const sub = Session.sub(c, channel);
    sub.subscribe();
    c.connect();
    const ctx = await c.rec.wait('connected');
    assert.ok(ctx.client, `connected without a client id: ${JSON.stringify(ctx)}`);
    await sub.rec.wait('subscribed');
    const data1 = { text: 'héllo ✓', n: 1, f: 1.5, nested: { a: [1, 2, null, true] } };
    assert.deepStrictEqual(await apiOk('publish', { channel, data: data1 }), {});
    const p1 = await sub.rec.wait('publication', pubWith(data1));
    assert.equal(p1.channel, channel);
    assert.equal(p1.info, undefined, `API publication carries info: ${JSON.stringify(p1.info)}`);
    const data2 = 'a JSON string via Authorization: apikey';
    await apiOk('publish', { channel, data: data2 }, 'authorization');
    await sub.rec.wait('publication', pubWith(data2));
    await apiOk('publish', { channel, data: 42 });
    await sub.rec.wait('publication', pubWith(42));
    assert.deepStrictEqual(sub.rec.of('publication').map((p) => p.data), [data1, data2, 42]);
  },

  // Clients spread over both workers (per-worker num_clients in /api/info
  // all non-zero) each receive one API publication.
  async fanout_both_workers(s) {
    const channel = ch('fanout');
    const subs = [];
    const openBatch = async (n) => {
      for (let i = 0; i < n; i++) {
        const c = await s.connected(`fan${subs.length}`);
        subs.push(await s.subscribed(c, channel));
      }
    };
    const perWorker = async () => {
      const info = await apiOk('info', {});
      const node = info.nodes[0];
      for (const k of ['uid', 'name', 'version', 'num_clients', 'num_users', 'num_channels', 'num_subs']) {
        assert.ok(k in node, `/api/info node without ${k}: ${JSON.stringify(node)}`);
      }
      assert.equal(node.workers.length, 2, `workers: ${JSON.stringify(node.workers)}`);
      return node.workers.map((w) => w.num_clients);
    };
    // Earlier checks' clients are gone (their closes processed): the counts
    // below are this check's clients only.
    for (let i = 0; i < 30 && (await perWorker()).some((n) => n !== 0); i++) await sleep(100);
    assert.deepStrictEqual(await perWorker(), [0, 0], 'clients of earlier checks still counted');
    // SO_REUSEPORT hashes connections to workers: add batches (at most 32
    // clients) until both have some.
    await openBatch(8);
    let counts = await perWorker();
    while (counts.includes(0) && subs.length < 32) {
      await openBatch(8);
      counts = await perWorker();
    }
    assert.ok(!counts.includes(0), `clients not on both workers: ${counts}`);
    const data = { fanout: RUN, clients: subs.length };
    await apiOk('publish', { channel, data });
    await Promise.all(subs.map((sub) => sub.rec.wait('publication', pubWith(data))));
    console.log(`    (${subs.length} clients, per worker ${JSON.stringify(counts)})`);
  },

  // Client publish where the namespace allows it reaches the other
  // subscriber (and the publisher) with the publisher's info.
  async client_publish_allowed(s) {
    const channel = ch('chat:room');
    const a = await s.connected('anon-publisher');
    const b = await s.connected('user-reader', { token: userToken('reader-js') });
    const sa = await s.subscribed(a, channel);
    const sb = await s.subscribed(b, channel);
    const data = { text: 'from js', k: [1, { x: null }] };
    assert.deepStrictEqual(await sa.publish(data), {});
    const got = await sb.rec.wait('publication', pubWith(data));
    assert.ok(got.info, 'client publication without info');
    assert.equal(got.info.client, a.clientId);
    assert.equal(got.info.user, '');
    await sa.rec.wait('publication', pubWith(data));
    const data2 = { text: 'from user' };
    await b.publish(channel, data2);
    const got2 = await sa.rec.wait('publication', pubWith(data2));
    assert.equal(got2.info && got2.info.user, 'reader-js', `info ${JSON.stringify(got2.info)}`);
  },

  // Publish refused: 103 where the namespace does not allow it, 102 in an
  // unknown namespace; nothing delivered, the client stays connected.
  async client_publish_forbidden(s) {
    const c = await s.connected('anon');
    const sub = await s.subscribed(c, ch('ro:feed'));
    await rejectsWith(sub.publish({ nope: 1 }), 103, 'permission denied', 'publish to ro:');
    await quiet(sub.rec, 'publication');
    await rejectsWith(c.publish(ch('nope:x'), { nope: 1 }), 102, 'unknown channel', 'publish to nope:');
    assert.equal(c.state, 'connected');
  },

  // Subscribe refused: the subscription ends unsubscribed with the code
  // (103 forbidden namespace / anonymous in a users-only one, 102 unknown).
  async subscribe_refused(s) {
    const anon = await s.connected('anon');
    for (const [channel, code, reason] of [
      [ch('secret:x'), 103, 'permission denied'],
      [ch('nope:x'), 102, 'unknown channel'],
      [ch('members:x'), 103, 'permission denied'],
    ]) {
      const sub = Session.sub(anon, channel);
      sub.subscribe();
      const u = await sub.rec.wait('unsubscribed');
      assert.deepStrictEqual([u.code, u.reason], [code, reason], `${channel}: ${JSON.stringify(u)}`);
      assert.equal(sub.state, 'unsubscribed');
      assert.equal(sub.rec.of('subscribed').length, 0);
    }
    assert.equal(anon.state, 'connected');
    const user = await s.connected('user', { token: userToken('member-js') });
    await s.subscribed(user, ch('members:x'));
  },

  // Valid HS256 token with a `channels` claim: connected as that user, and
  // subscribed server-side (client-level `subscribed` event) even in a
  // namespace clients may not subscribe to; API publications arrive as
  // client-level `publication` events.
  async jwt_connect_channels_claim(s) {
    const c1 = ch('secret:srv');
    const c2 = ch('srvnews');
    const c = s.client('jwt', { token: userToken('bob-js', { channels: [c1, c2] }) });
    c.connect();
    await c.rec.wait('connected');
    for (const channel of [c1, c2]) {
      await c.rec.wait('subscribed', (x) => x.channel === channel);
    }
    for (const channel of [c1, c2]) {
      const data = { serverSide: channel };
      await apiOk('publish', { channel, data });
      await c.rec.wait('publication', (x) => x.channel === channel && deepEq(x.data, data));
    }
    // The user id is the token's sub.
    const own = await s.subscribed(c, ch('chat:bob'));
    await own.publish({ who: 'bob' });
    const p = await own.rec.wait('publication', pubWith({ who: 'bob' }));
    assert.equal(p.info && p.info.user, 'bob-js');
  },

  // A token with a bad signature (and a malformed one): disconnected 3500
  // "invalid token", terminal.
  async bad_token(s) {
    for (const [label, token] of [
      ['bad-sig', jwt({ sub: 'mallory', exp: now() + 600 }, 'wrong-secret')],
      ['garbage', 'not.a.jwt'],
    ]) {
      const c = s.client(label, { token });
      c.connect();
      const d = await c.rec.wait('disconnected');
      assert.deepStrictEqual([d.code, d.reason], [3500, 'invalid token'], `${label}: ${JSON.stringify(d)}`);
      assert.equal(c.rec.of('connected').length, 0);
      assert.equal(c.state, 'disconnected');
    }
  },

  // Expired token (valid signature): the server answers error 109 "token
  // expired". centrifuge-js (_connectError) emits error {type: 'connect',
  // error: {code: 109}} and reconnects; with no getToken it cannot get a new
  // token (_startConnecting → _failUnauthorized) and ends disconnected with
  // code 1 "unauthorized". With getToken it asks for a new token and connects.
  async expired_token(s) {
    const expired = jwt({ sub: 'old-js', exp: now() - 60 });
    const c = s.client('expired', { token: expired });
    c.connect();
    const d = await c.rec.wait('disconnected');
    assert.deepStrictEqual([d.code, d.reason], [1, 'unauthorized'], JSON.stringify(d));
    const errs = c.rec.of('error');
    assert.ok(errs.length >= 1, `no error event: ${c.rec.summary()}`);
    assert.equal(errs[0].type, 'connect');
    assert.deepStrictEqual([errs[0].error.code, errs[0].error.message], [109, 'token expired']);
    assert.equal(c.rec.of('connected').length, 0);

    let calls = 0;
    const c2 = s.client('expired-getToken', {
      token: expired,
      getToken: async () => { calls += 1; return userToken('renewed-js'); },
    });
    c2.connect();
    await c2.rec.wait('connected', () => true, WAIT * 2);
    assert.equal(calls, 1, `getToken called ${calls} times`);
    assert.equal(c2.rec.of('error')[0].error.code, 109);
  },

  // Gateway with allow_anonymous = false: no token → disconnected 3501
  // "bad request" (centrifuge: client credentials not found); a token works.
  async anonymous_not_allowed(s) {
    const c = s.client('noanon', { url: NOANON_WS_URL });
    c.connect();
    const d = await c.rec.wait('disconnected');
    assert.deepStrictEqual([d.code, d.reason], [3501, 'bad request'], JSON.stringify(d));
    assert.equal(c.rec.of('connected').length, 0);
    const c2 = await s.connected('noanon-jwt', { url: NOANON_WS_URL, token: userToken('carol-js') });
    await s.subscribed(c2, ch('plain'));
  },

  // Not implemented by the gateway: history, presence, presence_stats, rpc
  // → 108 "not available" (as Centrifugo with them off / no RPC proxy).
  async history_not_available(s) {
    const c = await s.connected('anon');
    const sub = await s.subscribed(c, ch('hist'));
    await rejectsWith(sub.history({ limit: 10 }), 108, 'not available', 'history');
    await rejectsWith(sub.presence(), 108, 'not available', 'presence');
    await rejectsWith(sub.presenceStats(), 108, 'not available', 'presence_stats');
    // Centrifugo without an RPC proxy has no OnRPC handler → 108 too.
    await rejectsWith(c.rpc('sum', { a: 1 }), 108, 'not available', 'rpc');
    assert.equal(c.state, 'connected');
  },

  // Server API status codes (Centrifugo's): 401 wrong key, 405 GET, 400
  // invalid JSON, 404 unknown endpoint.
  async api_http_statuses() {
    const body = { channel: ch('news'), data: { x: 1 } };
    assert.equal((await http('POST', '/publish', body, { 'X-API-Key': 'wrong' })).status, 401);
    assert.equal((await http('POST', '/publish', body, { Authorization: 'apikey wrong' })).status, 401);
    assert.equal((await http('GET', '/publish', undefined, { 'X-API-Key': API_KEY })).status, 405);
    assert.equal((await http('POST', '/publish', '{"channel":', { 'X-API-Key': API_KEY })).status, 400);
    assert.equal((await http('POST', '/nope', {}, { 'X-API-Key': API_KEY })).status, 404);
    const r = await api('publish', { channel: ch('nope:x'), data: 1 });
    assert.equal(r.error && r.error.code, 102, JSON.stringify(r));
  },

  // /api/broadcast reaches the subscribers of two channels.
  async api_broadcast(s) {
    const c = await s.connected('anon');
    const s1 = await s.subscribed(c, ch('bc1'));
    const s2 = await s.subscribed(c, ch('chat:bc2'));
    const data = { broadcast: RUN };
    const result = await apiOk('broadcast', { channels: [s1.channel, s2.channel], data });
    assert.deepStrictEqual(result, { responses: [{ result: {} }, { result: {} }] });
    await s1.rec.wait('publication', pubWith(data));
    await s2.rec.wait('publication', pubWith(data));
  },

  // /api/subscribe with user: server-side subscription visible to the
  // JWT client; /api/unsubscribe ends it (client-level unsubscribed) and a
  // client-side one with unsubscribed 2000 "server unsubscribe".
  async api_subscribe_unsubscribe(s) {
    const user = `dave-js${RUN}`;
    const c = await s.connected('jwt', { token: userToken(user) });
    const channel = ch('secret:api');
    await apiOk('subscribe', { user, channel });
    await c.rec.wait('subscribed', (x) => x.channel === channel);
    await apiOk('publish', { channel, data: { n: 1 } });
    await c.rec.wait('publication', (x) => x.channel === channel && deepEq(x.data, { n: 1 }));
    await apiOk('unsubscribe', { user, channel });
    await c.rec.wait('unsubscribed', (x) => x.channel === channel);
    await apiOk('publish', { channel, data: { n: 2 } });
    await quiet(c.rec, 'publication', (x) => deepEq(x.data, { n: 2 }));
    const sub = await s.subscribed(c, ch('own'));
    await apiOk('unsubscribe', { user, channel: sub.channel });
    const u = await sub.rec.wait('unsubscribed');
    assert.deepStrictEqual([u.code, u.reason], [2000, 'server unsubscribe']);
    assert.equal(c.state, 'connected');
  },

  // /api/disconnect with user: default 3503 "force disconnect"; a given
  // code and reason; by client id.
  async api_disconnect(s) {
    const u1 = `erin-js${RUN}`;
    const u2 = `frank-js${RUN}`;
    const a = await s.connected('default', { token: userToken(u1) });
    const b = await s.connected('custom', { token: userToken(u2) });
    const bystander = await s.connected('bystander');
    await apiOk('disconnect', { user: u1 });
    let d = await a.rec.wait('disconnected');
    assert.deepStrictEqual([d.code, d.reason], [3503, 'force disconnect']);
    await apiOk('disconnect', { user: u2, disconnect: { code: 4501, reason: 'bye now' } });
    d = await b.rec.wait('disconnected');
    assert.deepStrictEqual([d.code, d.reason], [4501, 'bye now']);
    const c = await s.connected('by-client-id');
    await apiOk('disconnect', { client: c.clientId });
    d = await c.rec.wait('disconnected');
    assert.deepStrictEqual([d.code, d.reason], [3503, 'force disconnect']);
    await quiet(bystander.rec, 'disconnected');
    assert.equal(bystander.state, 'connected');
  },

  // A burst of client publications (200, not awaited one by one) from one
  // client reaches subscribers on both workers complete and in order.
  async client_publish_burst_order(s) {
    const channel = ch('chat:burst');
    const total = async () => (await apiOk('info', {})).nodes[0].num_clients;
    for (let i = 0; i < 30 && (await total()) !== 0; i++) await sleep(100);
    assert.equal(await total(), 0, 'clients of earlier checks still counted');
    const publisher = await s.connected('publisher');
    const readers = [];
    let counts = [0, 0];
    // Readers until both workers have some (see fanout_both_workers).
    while (readers.length < 4 || (counts.includes(0) && readers.length < 32)) {
      const c = await s.connected(`reader${readers.length}`);
      readers.push(await s.subscribed(c, channel));
      if (readers.length >= 4) {
        counts = (await apiOk('info', {})).nodes[0].workers.map((w) => w.num_clients);
      }
    }
    assert.ok(!counts.includes(0), `readers not on both workers: ${counts}`);
    const N = 200;
    const results = await Promise.all(Array.from({ length: N }, (_, i) => publisher.publish(channel, { i })));
    assert.equal(results.length, N);
    for (const r of readers) {
      await r.rec.wait('publication', pubWith({ i: N - 1 }));
      const got = r.rec.of('publication').map((p) => p.data.i);
      assert.deepStrictEqual(got, Array.from({ length: N }, (_, i) => i), `${r.rec.label}: order/completeness`);
    }
  },

  // /api/disconnect with a code in the reconnect range (4000-4499): the SDK
  // reconnects and resubscribes (centrifuge disconnect.go rules).
  async api_disconnect_reconnect_code(s) {
    const user = `gus-js${RUN}`;
    const c = await s.connected('jwt', { token: userToken(user) });
    const sub = await s.subscribed(c, ch('again'));
    const first = c.clientId;
    await apiOk('disconnect', { user, disconnect: { code: 4000, reason: 'come back' } });
    const ctx = await c.rec.wait('connecting', (x) => x.code === 4000);
    assert.equal(ctx.reason, 'come back');
    const again = await c.rec.wait('connected', (x) => x.client !== first);
    assert.ok(again.client);
    await sub.rec.wait('subscribed', () => sub.rec.of('subscribed').length >= 2);
    await apiOk('publish', { channel: sub.channel, data: 'after reconnect' });
    await sub.rec.wait('publication', pubWith('after reconnect'));
    assert.equal(c.rec.of('disconnected').length, 0);
  },

  // App-level pings ({} every pubsub.ping_interval_ms = 2 s in the test
  // config) answered with pongs keep the connection: no disconnect or
  // reconnect over more than two ping intervals, and it still receives.
  async keepalive_pings(s) {
    const c = await s.connected('idle');
    const sub = await s.subscribed(c, ch('idle'));
    const before = c.rec.events.length;
    await sleep(4500);
    const changes = c.rec.events.slice(before).filter(([k]) => k === 'connecting' || k === 'disconnected');
    assert.equal(changes.length, 0, `state changes while idle: ${JSON.stringify(changes)}`);
    assert.equal(c.state, 'connected');
    await apiOk('publish', { channel: sub.channel, data: 'still here' });
    await sub.rec.wait('publication', pubWith('still here'));
  },

  // API publication data with formatting newlines (pretty-printed JSON)
  // must reach subscribers unchanged in value.
  async api_publish_multiline_json(s) {
    const c = await s.connected('anon');
    const sub = await s.subscribed(c, ch('pretty'));
    const data = { a: 1, b: [2, 'x\ny'] };
    const body = `{"channel": "${sub.channel}",\n "data": ${JSON.stringify(data, null, 2)}\n}`;
    const r = await http('POST', '/publish', body, { 'X-API-Key': API_KEY });
    assert.deepStrictEqual([r.status, r.text], [200, '{"result":{}}']);
    // Was a gateway bug (fixed): the gateway copied the raw `data` into the push verbatim,
    // raw newlines included, so the frame splits into invalid JSON lines and
    // centrifuge-js disconnects (code 2 "bad protocol"). Centrifugo strips raw
    // `\n` from Raw payloads when encoding (centrifugal/protocol raw.go
    // Raw.MarshalJSON), which keeps the value.
    try {
      await sub.rec.wait('publication', pubWith(data));
    } catch (e) {
      e.message += `\n        client events: ${c.rec.summary()}`;
      throw e;
    }
    assert.equal(c.state, 'connected', `client state ${c.state}: ${c.rec.summary()}`);
  },
};

async function main() {
  const only = new Set(process.argv.slice(2));
  let passed = 0;
  let failed = 0;
  for (const [name, fn] of Object.entries(checks)) {
    if (only.size && !only.has(name)) continue;
    const s = new Session(name);
    const t0 = Date.now();
    let timer;
    try {
      await Promise.race([
        fn(s),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error(`check timed out after ${CHECK_TIMEOUT}ms`)), CHECK_TIMEOUT);
        }),
      ]);
      passed += 1;
      console.log(`  ok    ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
    } catch (e) {
      failed += 1;
      const msg = e instanceof assert.AssertionError ? e.message : (e && e.stack) || JSON.stringify(e);
      console.log(`  FAIL  ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s): ${msg}`);
    } finally {
      clearTimeout(timer);
      s.close();
    }
  }
  console.log(`js: ${passed} passed, ${failed} failed`);
  return failed === 0 && passed > 0 ? 0 : 1;
}

// Exit explicitly: ws sockets being closed must not hold the process.
main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(1); });
