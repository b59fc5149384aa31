// Unit tests of web/chatgate.js in Node (the `ws` package injected as its
// WebSocket), against a real gateway: backoff, stop codes, resume across a
// restart, duplicates dropped by id.

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import WebSocket from 'ws';
import { ChatGate, backoffDelay } from '../../web/chatgate.js';
import { Gateway, rawClient, until, freePort } from './gateway.mjs';

/** @type {Gateway} */
let gw;
before(async () => {
  gw = await new Gateway().start();
});
after(async () => {
  await gw?.close();
});

/** A client of the test gateway; `events` records every event in order. */
function client(options = {}) {
  const c = new ChatGate({ url: gw.wsUrl, WebSocket, ...options });
  const events = [];
  for (const e of ['connected', 'disconnected', 'reconnecting', 'stopped', 'new_message', 'resumed', 'error', 'read_state']) {
    c.on(e, (data) => events.push({ e, data }));
  }
  return { c, events, messages: () => events.filter((x) => x.e === 'new_message').map((x) => x.data.message) };
}

/**
 * A WebSocket implementation (for the client's `WebSocket` option) over `ws`
 * whose incoming frames go through `wrap(ws, onmessage)`: stands in for a
 * misbehaving proxy or transport.
 */
function transport(wrap) {
  return function (url, protocols) {
    const ws = new WebSocket(url, protocols);
    return {
      get readyState() {
        return ws.readyState;
      },
      get protocol() {
        return ws.protocol;
      },
      send: (d) => ws.send(d),
      close: (code) => ws.close(code),
      set onmessage(f) {
        ws.onmessage = f && wrap(ws, f);
      },
      set onclose(f) {
        ws.onclose = f;
      },
      set onerror(f) {
        ws.onerror = f;
      },
      set onopen(f) {
        ws.onopen = f;
      },
    };
  };
}

test('backoff is exponential with full jitter, capped', () => {
  const opts = { initial: 500, max: 30000 };
  assert.equal(backoffDelay(0, opts, () => 0), 0);
  assert.equal(backoffDelay(0, opts, () => 0.999999), 499);
  assert.equal(backoffDelay(3, opts, () => 0.5), 2000); // half of 500·2³
  assert.equal(backoffDelay(10, opts, () => 0.999999), 29999); // capped at max
  assert.equal(backoffDelay(1000, opts, () => 0.5), 15000); // no overflow far out
  // Full jitter: spread over the whole window, not bunched at its end.
  const draws = Array.from({ length: 2000 }, () => backoffDelay(4, opts));
  assert.ok(Math.min(...draws) < 800 && Math.max(...draws) > 7200, 'spread over [0, 8000)');
  assert.ok(draws.every((d) => d >= 0 && d < 8000));
});

test('speaks v2, sends and receives, keeps the original API', async () => {
  const { c, messages } = client();
  c.connect(1, gw.tokenOf('alice'));
  await until(() => c.isConnected, 'connected');
  assert.equal(c.version, 'v2');
  assert.equal(c.sendMessage('hello from node'), true);
  await until(() => messages().some((m) => m.content === 'hello from node'), 'own message echoed');
  const page = await c.history({ limit: 5 });
  assert.equal(page.messages.at(-1).content, 'hello from node');
  assert.equal(c.sendTyping(true), true);
  c.disconnect();
  assert.equal(c.sendMessage('not sent'), false);
  assert.equal(c.state, 'idle');
});

test('disconnect while the socket is still connecting throws nothing, and connecting again works', async () => {
  const { c, events } = client();
  c.connect(1, gw.tokenOf('alice'));
  c.disconnect(); // still CONNECTING: Node's ws emits an error for this
  await new Promise((r) => setTimeout(r, 100)); // an uncaught error would fail this test
  assert.equal(c.state, 'idle');
  c.connect(1, gw.tokenOf('alice'));
  await until(() => c.isConnected, 'connected');
  c.disconnect();
  assert.ok(!events.some((x) => x.e === 'reconnecting'), 'no reconnect after disconnect()');
});

test('a v1 connection (v2: false) still chats; v2 calls refuse', async () => {
  const { c, messages } = client({ v2: false });
  c.connect(1, gw.tokenOf('bob'));
  await until(() => c.isConnected, 'connected');
  assert.equal(c.version, 'v1');
  await assert.rejects(c.history(), /v2/);
  assert.equal(c.react(1, '👍'), false);
  c.sendMessage('bob on v1');
  await until(() => messages().some((m) => m.content === 'bob on v1'), 'echo');
  c.disconnect();
});

for (const [what, conv, token, code, reason] of [
  ['a bad token', 1, () => 'not-a-token', 4001, 'unauthenticated'],
  ['a conversation the user is not in', 999, () => gw.tokenOf('alice'), 4003, 'forbidden'],
]) {
  test(`stops for good on ${code} (${what}) and says why`, async () => {
    const { c, events } = client({ backoff: { initial: 50, max: 50 } });
    c.connect(conv, token());
    await until(() => c.state === 'stopped', 'stopped');
    const stopped = events.find((x) => x.e === 'stopped');
    assert.deepEqual(stopped.data, { code, reason });
    await new Promise((r) => setTimeout(r, 400)); // eight backoff windows
    assert.equal(events.filter((x) => x.e === 'reconnecting').length, 0, 'never reconnects');
    assert.equal(events.filter((x) => x.e === 'connected').length, 0);
  });
}

test('after a gateway restart it reconnects with backoff and resumes: every message once, in order', async () => {
  const { c, events, messages } = client({ backoff: { initial: 200, max: 800 } });
  c.connect(1, gw.tokenOf('alice'));
  await until(() => c.isConnected, 'connected');
  const sender = rawClient(`${gw.wsUrl}/ws/chat/1/?token=${gw.tokenOf('bob')}`);
  await sender.ready;
  sender.send({ type: 'chat_message', content: 'before the restart' });
  await until(() => messages().some((m) => m.content === 'before the restart'), 'live message');

  await gw.stop();
  await until(() => events.filter((x) => x.e === 'reconnecting').length >= 2, 'two reconnect attempts', 5000);
  for (const r of events.filter((x) => x.e === 'reconnecting')) {
    assert.ok(r.data.delay >= 0 && r.data.delay < 800, `delay ${r.data.delay} within the cap`);
  }
  const away = events.find((x) => x.e === 'disconnected').data;
  assert.equal(away.code, 1001);
  assert.equal(away.willReconnect, true);

  await gw.start();
  // A third client sends while alice is away and goes on while she resumes.
  const third = rawClient(`${gw.wsUrl}/ws/chat/1/?token=${gw.tokenOf('bob')}`);
  await third.ready;
  const sent = [];
  for (let i = 0; i < 30; i++) {
    third.send({ type: 'chat_message', content: `while away ${i}` });
    sent.push(`while away ${i}`);
    if (i >= 10) await new Promise((r) => setTimeout(r, 30));
  }
  await until(() => third.frames.filter((f) => f.type === 'new_message').length === 30, 'the third client’s echoes');
  const ids = third.frames.filter((f) => f.type === 'new_message').map((f) => f.message.id);
  await until(() => ids.every((id) => messages().some((m) => m.id === id)), 'all 30 at alice', 15000);
  await new Promise((r) => setTimeout(r, 300)); // anything doubled would have come by now
  const got = messages().map((m) => m.id);
  assert.equal(new Set(got).size, got.length, 'no message twice');
  assert.deepEqual([...got].sort((a, b) => a - b), got, 'in id order');
  assert.deepEqual(got.filter((id) => ids.includes(id)), ids, 'each sent message exactly once');
  const resumed = events.filter((x) => x.e === 'resumed');
  assert.ok(resumed.length >= 1, 'the reconnect resumed with since');
  assert.equal(events.filter((x) => x.e === 'connected').at(-1).data.reconnect, true);
  third.ws.close();
  sender.ws.close();
  c.disconnect();
});

test('a server that admits and drops at once gets a growing backoff; a connection that stays up starts it over', async () => {
  // Stands in for a gateway (or proxy) that accepts and then drops at once.
  let drop = true;
  const Dropping = transport((ws, f) => (ev) => (f(ev), drop && ws.terminate()));
  const { c, events } = client({ WebSocket: Dropping, backoff: { initial: 10, max: 40, resetAfter: 300 } });
  const attempts = () => events.filter((x) => x.e === 'reconnecting').map((x) => x.data.attempt);
  c.connect(1, gw.tokenOf('bob'));
  await until(() => attempts().length >= 4, 'four reconnects');
  assert.deepEqual(attempts().slice(0, 4), [1, 2, 3, 4], 'admitted each time, the backoff still grows');
  drop = false;
  await until(() => c.isConnected, 'connected');
  await new Promise((r) => setTimeout(r, 450));
  drop = true;
  c.sendMessage('wake'); // the next frame (its echo) drops the socket again
  const seen = attempts().length;
  await until(() => attempts().length > seen, 'a reconnect after the stable connection');
  assert.equal(attempts()[seen], 1, 'a connection that stayed up starts the backoff over');
  c.disconnect();
});

test('duplicates are dropped by id (a transport that delivers every frame twice)', async () => {
  // Stands in for a proxy or a buggy transport that repeats frames.
  const Doubling = transport((_ws, f) => (ev) => (f(ev), f(ev)));
  const { c, messages } = client({ WebSocket: Doubling });
  c.connect(1, gw.tokenOf('bob'));
  await until(() => c.isConnected, 'connected');
  // The newest history page moves the resume point too.
  const page = await c.history({ limit: 3 });
  assert.equal(c.lastId, page.messages.at(-1).id);
  for (let i = 0; i < 5; i++) c.sendMessage(`doubled ${i}`);
  await until(() => messages().filter((m) => m.content.startsWith('doubled')).length === 5, 'five messages');
  await new Promise((r) => setTimeout(r, 200));
  assert.deepEqual(
    messages().map((m) => m.content),
    [0, 1, 2, 3, 4].map((i) => `doubled ${i}`),
  );
  c.disconnect();
});

test('a list of URLs: a failed connect moves on to the next one, round robin; a dropped connection too', async () => {
  assert.throws(() => new ChatGate({ url: [], WebSocket }), /empty/);
  const dead = `ws://127.0.0.1:${await freePort()}`; // nothing listens there
  const { c, events } = client({ url: [dead, gw.origin], backoff: { initial: 20, max: 20 } });
  assert.equal(c.url, dead);
  c.connect(1, gw.tokenOf('alice'));
  await until(() => c.isConnected, 'connected to the second URL');
  const connected = events.filter((x) => x.e === 'connected');
  assert.deepEqual(connected.map((x) => x.data.url), [gw.wsUrl], 'http:// turned into ws://');
  assert.deepEqual(
    events.filter((x) => x.e === 'reconnecting').map((x) => x.data.url),
    [gw.wsUrl],
    'one failed attempt at the dead URL, then the next',
  );
  c.sendMessage('round robin');
  await until(() => c.lastId > 0, 'a message seen, to resume after');
  // Dropped by the server: back to the first URL (refused), then the second again.
  const seen = events.length;
  await gw.stop();
  await gw.start();
  await until(() => c.isConnected && events.slice(seen).some((x) => x.e === 'connected'), 'connected again');
  const urls = events.slice(seen).filter((x) => x.e === 'reconnecting').map((x) => x.data.url);
  assert.equal(urls[0], dead, 'after the drop, the next URL of the list');
  assert.ok(
    urls.every((u, k) => u === (k % 2 ? gw.wsUrl : dead)),
    `round robin: ${urls.join(' ')}`,
  );
  assert.equal(events.filter((x) => x.e === 'connected').at(-1).data.url, gw.wsUrl);
  assert.ok(events.slice(seen).some((x) => x.e === 'resumed'), 'resumed on the node it landed on');
  // connect() starts at the first URL again.
  c.connect(1, gw.tokenOf('alice'));
  assert.equal(c.url, dead);
  await until(() => c.isConnected, 'connected once more');
  c.disconnect();
});

test('history checks its arguments and pages backwards', async () => {
  const { c } = client();
  c.connect(1, gw.tokenOf('alice'));
  await until(() => c.isConnected, 'connected');
  await assert.rejects(c.history({ limit: 0 }), RangeError);
  await assert.rejects(c.history({ limit: 101 }), RangeError);
  await assert.rejects(c.history({ before: -1 }), RangeError);
  const newest = await c.history({ limit: 2 });
  assert.equal(newest.messages.length, 2);
  const older = await c.history({ before: newest.messages[0].id, limit: 2 });
  assert.ok(older.messages.every((m) => m.id < newest.messages[0].id));
  assert.ok(older.messages[0].id < older.messages[1].id, 'oldest first');
  c.disconnect();
});

test('a resume cut short by --resume-max reports the gap, and missedBetween pages it in: nothing lost', async () => {
  const small = await new Gateway(['--resume-max', '3']).start();
  try {
    const c = new ChatGate({ url: small.wsUrl, WebSocket });
    const got = [];
    const gaps = [];
    c.on('new_message', (f) => got.push(f.message.id));
    c.on('gap', (g) => gaps.push(g));
    c.connect(1, small.tokenOf('alice'));
    await until(() => c.isConnected, 'connected');
    const other = rawClient(`${small.wsUrl}/ws/chat/1/?token=${small.tokenOf('bob')}`);
    await other.ready;
    other.send({ type: 'chat_message', content: 'seen' });
    await until(() => got.length === 1, 'the first message');
    c.disconnect();
    for (let i = 0; i < 10; i++) other.send({ type: 'chat_message', content: `missed ${i}` });
    await until(() => other.frames.filter((f) => f.type === 'new_message').length === 11, 'echoes');
    const sent = other.frames.filter((f) => f.type === 'new_message').map((f) => f.message.id);
    other.ws.close();
    c.connect(1, small.tokenOf('alice')); // same conversation: resumes after the one seen
    await until(() => gaps.length === 1, 'a gap');
    assert.deepEqual(got.slice(1), sent.slice(-3), 'the newest three replayed');
    assert.deepEqual(gaps[0], { after: sent[0], before: sent[8] });
    const missed = await c.missedBetween(gaps[0]);
    assert.deepEqual([...got, ...missed.map((m) => m.id)].sort((a, b) => a - b), sent, 'every message once');
    c.disconnect();
  } finally {
    await small.close();
  }
});
