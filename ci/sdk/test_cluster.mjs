// The core cluster check of ci/sdk/test_cluster.py with the real centrifuge-js
// SDK under Node: three nodes (config/cluster-redis.toml or cluster-nats.toml),
// subscribers spread over them, publications through every node's server API
// and from a client reach every subscriber exactly once and in order. (The
// broker outage is test_cluster.py's.) Run by ci/sdk-tests.sh, which sets:
//
//   SDK_CLUSTER_BROKER   redis | nats
//   SDK_CLUSTER_LISTEN   the nodes' listen addresses (= node names), space separated
//   SDK_CLUSTER_ADMIN    the nodes' admin addresses (API), same order
//   SDK_GATEWAY_CONFIG   the nodes' config (API key)
//   SDK_NODE_PREFIX      directory holding node_modules
//
// Every check asserts and every wait is bounded. Prints one line per check and
// "cluster-js: N passed, N failed"; exits 1 on any failure; a failed check
// stops the run (the later ones use its subscribers).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(join(process.env.SDK_NODE_PREFIX || here, 'package.json'));
const { Centrifuge } = require('centrifuge');
const WebSocket = require('ws');

const BROKER = process.env.SDK_CLUSTER_BROKER;
const LISTEN = process.env.SDK_CLUSTER_LISTEN.split(/\s+/).filter(Boolean);
const ADMIN = process.env.SDK_CLUSTER_ADMIN.split(/\s+/).filter(Boolean);
assert.ok(LISTEN.length >= 2 && LISTEN.length === ADMIN.length, 'SDK_CLUSTER_LISTEN / _ADMIN');
const NODES = [...LISTEN.keys()];
// `key` under [api] (the only value needed from the TOML).
const apiSection = readFileSync(process.env.SDK_GATEWAY_CONFIG, 'utf8').split(/^\[/m).find((s) => s.startsWith('api]'));
const API_KEY = apiSection.match(/^key\s*=\s*"([^"]*)"/m)[1];

const WAIT = 5000; // one expected event
const QUIET = 300; // how long "nothing more arrives" is watched
const PER_NODE = 3;
const RUN = randomBytes(4).toString('hex');
const CHANNEL = `cluster-${BROKER}-js${RUN}`;
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

// Polls `fn` until it returns something truthy; fails after `timeout` ms.
async function until(what, fn, timeout = WAIT) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const got = await fn();
    if (got) return got;
    if (Date.now() > deadline) assert.fail(`${what} (not within ${timeout}ms; last: ${JSON.stringify(got)})`);
    await sleep(50);
  }
}

async function api(node, endpoint, body) {
  const r = await fetch(`http://${ADMIN[node]}/api/${endpoint}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-API-Key': API_KEY },
    body: JSON.stringify(body),
    signal: AbortSignal.timeout(WAIT),
  });
  const text = await r.text();
  assert.equal(r.status, 200, `node ${node} /api/${endpoint}: HTTP ${r.status} ${text}`);
  return JSON.parse(text);
}

async function publish(node, data) {
  const resp = await api(node, 'publish', { channel: CHANNEL, data });
  assert.deepEqual(resp, { result: {} }, `node ${node} /api/publish ${JSON.stringify(data)}`);
}

const clients = [];
let subs = [];
let seen = 0; // publications each subscriber had before the current step
const datas = (s) => s.pubs.map((p) => p.data);

// Every subscriber has every publication of `want` (then a quiet moment, so
// that a duplicate would be there too).
async function allReceived(want) {
  const missing = () => subs.filter((s) => !want.every((d) => datas(s).some((x) => same(x, d))));
  try {
    await until('publications delivered', () => missing().length === 0);
  } catch {
    assert.fail(`not delivered within ${WAIT}ms to ${missing().map((s) => s.label).join(', ')}`);
  }
  await sleep(QUIET);
}

const checks = {
  async info_lists_every_node() {
    for (const n of NODES) {
      await until(`node ${n} /api/info lists ${LISTEN}`, async () => {
        const info = await api(n, 'info', {});
        return same(info.result.nodes.map((x) => x.name).sort(), [...LISTEN].sort());
      });
    }
  },

  async subscribers_on_every_node() {
    for (const n of NODES) {
      for (let i = 0; i < PER_NODE; i++) {
        const c = new Centrifuge(`ws://${LISTEN[n]}/connection/websocket`, {
          websocket: WebSocket, minReconnectDelay: 200, maxReconnectDelay: 1000, timeout: WAIT,
        });
        c.label = `c${i}@node${n}`;
        c.node = n;
        c.disconnects = [];
        c.on('disconnected', (ctx) => c.disconnects.push(ctx));
        c.on('connected', (ctx) => { c.clientId = ctx.client; });
        c.connect();
        clients.push(c);
      }
    }
    subs = clients.map((c) => {
      const s = c.newSubscription(CHANNEL);
      s.label = `${c.label}/${CHANNEL}`;
      s.node = c.node;
      s.client = c;
      s.pubs = [];
      s.on('publication', (ctx) => s.pubs.push(ctx));
      s.subscribe();
      return s;
    });
    // All subscribe at once; then publish right after the last reply.
    await Promise.all(subs.map((s) => Promise.race([
      s.ready(),
      sleep(WAIT).then(() => assert.fail(`${s.label}: not subscribed within ${WAIT}ms (${s.state})`)),
    ])));
    const first = { first: RUN };
    await publish(0, first);
    await allReceived([first]);
    for (const s of subs) assert.deepEqual(datas(s), [first], `${s.label}: received`);
    seen = 1;
    console.log(`    (${subs.length} subscribers, ${PER_NODE} per node)`);
  },

  async api_publish_through_every_node() {
    const count = 10;
    const series = NODES.map((n) => [...Array(count).keys()].map((k) => ({ via: n, seq: k })));
    for (let k = 0; k < count; k++) for (const n of NODES) await publish(n, series[n][k]);
    const want = series.flat();
    await allReceived(want);
    let order;
    for (const s of subs) {
      const got = datas(s).slice(seen);
      assert.equal(got.length, want.length, `${s.label}: ${got.length} publications, want ${want.length}`);
      for (const n of NODES) {
        assert.deepEqual(got.filter((d) => d.via === n), series[n], `${s.label}: node ${n}'s publications`);
      }
      order ??= got;
      assert.deepEqual(got, order, `${s.label}: another order than ${subs[0].label}`);
    }
    seen += want.length;
  },

  async client_publish_across_nodes() {
    for (const n of NODES) {
      const publisher = subs.find((s) => s.node === n);
      const data = { fromClientOn: n, run: RUN };
      await publisher.publish(data);
      await allReceived([data]);
      for (const s of subs) {
        const got = s.pubs.filter((p) => same(p.data, data));
        assert.equal(got.length, 1, `${s.label}: ${got.length} copies`);
        assert.equal(got[0].info?.client, publisher.client.clientId, `${s.label}: publication info ${JSON.stringify(got[0].info)}`);
      }
    }
    for (const c of clients) {
      assert.deepEqual(c.disconnects, [], `${c.label} disconnected`);
      assert.equal(c.state, 'connected', `${c.label}: ${c.state}`);
    }
  },
};

async function main() {
  let passed = 0;
  let failed = 0;
  for (const [name, fn] of Object.entries(checks)) {
    const t0 = Date.now();
    let timer;
    try {
      await Promise.race([
        fn(),
        new Promise((_, reject) => {
          timer = setTimeout(() => reject(new Error('check timed out after 30s')), 30000);
        }),
      ]);
      passed += 1;
      console.log(`  ok    ${BROKER}: ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s)`);
    } catch (e) {
      failed += 1;
      const msg = e instanceof assert.AssertionError ? e.message : (e && e.stack) || JSON.stringify(e);
      console.log(`  FAIL  ${BROKER}: ${name} (${((Date.now() - t0) / 1000).toFixed(1)}s): ${msg}`);
      break;
    } finally {
      clearTimeout(timer);
    }
  }
  for (const c of clients) {
    try { c.disconnect(); } catch { /* best effort */ }
  }
  console.log(`cluster-js: ${passed} passed, ${failed} failed`);
  return failed === 0 && passed === Object.keys(checks).length ? 0 : 1;
}

// Exit explicitly: ws sockets being closed must not hold the process.
main().then((code) => process.exit(code), (e) => { console.error(e); process.exit(1); });
