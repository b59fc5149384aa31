// The demo page in real Chromium (Debian's /usr/bin/chromium driven by
// playwright-core), two users on a real gateway, through the data-testid
// hooks of issue 13. Run by tests/browser.rs (`cargo test`); alone:
//   CHATGATE_BIN=target/debug/chatgate node --test --test-force-exit browser.test.mjs

import { describe, test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { Gateway, rawClient, serverFeatures, until } from './gateway.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const CHROMIUM = process.env.CHATGATE_CHROMIUM ?? '/usr/bin/chromium';
const SCREENSHOT = process.env.CHATGATE_SCREENSHOT ?? path.join(tmpdir(), 'chatgate-demo.png');

/** @type {Gateway} */ let gw;
/** @type {import('playwright-core').Browser} */ let browser;
/** @type {import('playwright-core').Page} */ let alice;
/** @type {import('playwright-core').Page} */ let bob;
let features = { presence: false, upload: false, calls: false };

async function open(link, viewport = { width: 1000, height: 720 }) {
  const context = await browser.newContext({ viewport });
  await context.grantPermissions(['camera', 'microphone'], { origin: gw.origin });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  page.on('pageerror', (e) => console.error(`page error: ${e}`));
  await page.goto(link);
  return page;
}

const message = (page, text) => page.locator('[data-testid="message"]', { hasText: text });
/** How many messages show exactly `text`. */
const countExact = (page, text) =>
  page.$$eval('[data-testid="message-content"]', (els, t) => els.filter((e) => e.textContent === t).length, text);
const status = (page) => page.getByTestId('status').textContent();

async function send(page, text) {
  await page.getByTestId('composer').fill(text);
  await page.getByTestId('send').click();
  await message(page, text).waitFor();
}

async function textIs(locator, expected, what) {
  await until(async () => {
    const t = (await locator.textContent()) ?? '';
    return expected instanceof RegExp ? expected.test(t) : t === expected;
  }, what);
}

let shot = false;
/** Alice's page with bob typing, saved to CHATGATE_SCREENSHOT. */
async function screenshot() {
  await bob.getByTestId('composer').pressSequentially('see you', { delay: 20 });
  await textIs(alice.getByTestId('typing'), /bob is typing/, 'typing shown');
  await alice.screenshot({ path: SCREENSHOT });
  await bob.getByTestId('composer').fill('');
  await textIs(alice.getByTestId('typing'), '', 'typing cleared');
  console.log(`# screenshot: ${SCREENSHOT}`);
  shot = true;
}

/** Skips, loudly, a test of a feature the gateway under test lacks. */
function lacks(t, feature, section) {
  const why = `SERVER LACKS ${feature} (docs/protocol.md ${section}): the gateway under test does not implement it yet`;
  console.log(`# ${why}`);
  t.skip(why);
}

before(async () => {
  gw = await new Gateway().start();
  features = await serverFeatures(gw);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream'],
  });
  [alice, bob] = await Promise.all([open(gw.links.alice), open(gw.links.bob, { width: 420, height: 760 })]);
});

after(async () => {
  await browser?.close();
  await gw?.close();
});

describe('the demo page, alice and bob in Chromium', () => {
  test('the first run prints two links, and they open a connected chat', async () => {
    assert.match(gw.firstRun, /alice: http:\/\/127\.0\.0\.1:\d+\/#conversation=1&token=ey/);
    assert.match(gw.firstRun, /bob: http:\/\/127\.0\.0\.1:\d+\/#conversation=1&token=ey/);
    assert.doesNotMatch(gw.firstRun, /console/);
    for (const page of [alice, bob]) await textIs(page.getByTestId('status'), /connected/, 'connected');
    assert.match(await status(alice), /v2/);
  });

  test('chat both ways', async () => {
    await send(alice, 'hello bob');
    const atBob = message(bob, 'hello bob');
    await atBob.waitFor();
    assert.equal(await atBob.getByTestId('message-sender').textContent(), 'alice');
    assert.equal(await atBob.getByTestId('message-content').textContent(), 'hello bob');
    assert.match((await atBob.getAttribute('data-id')) ?? '', /^\d+$/);
    await send(bob, 'hello alice');
    await message(alice, 'hello alice').waitFor();
    assert.equal(await message(alice, 'hello alice').getAttribute('data-id'), await message(bob, 'hello alice').getAttribute('data-id'));
  });

  test('typing shows and clears', async () => {
    const line = alice.getByTestId('typing');
    assert.equal(await line.textContent(), '');
    await bob.getByTestId('composer').pressSequentially('I am typ', { delay: 20 });
    await textIs(line, /bob is typing/, 'bob typing at alice');
    await bob.getByTestId('composer').fill('');
    await textIs(line, '', 'typing cleared');
  });

  test('delete hides the message for the deleter only', async () => {
    await send(alice, 'to be deleted');
    await message(bob, 'to be deleted').waitFor();
    await message(alice, 'to be deleted').getByTestId('delete').click();
    await until(async () => (await message(alice, 'to be deleted').count()) === 0, 'gone at alice');
    await send(alice, 'after the delete');
    await message(bob, 'after the delete').waitFor();
    assert.equal(await message(bob, 'to be deleted').count(), 1, 'still shown at bob');
  });

  test('reactions appear on both pages', async () => {
    const target = (page) => message(page, 'hello alice');
    await target(alice).locator('[data-testid="react"][data-emoji="👍"]').click();
    for (const page of [alice, bob]) {
      await textIs(target(page).locator('[data-testid="reaction"][data-emoji="👍"]'), '1', 'one 👍');
    }
    await target(bob).locator('[data-testid="react"][data-emoji="👍"]').click();
    await target(bob).locator('[data-testid="react"][data-emoji="🎉"]').click();
    for (const page of [alice, bob]) {
      await textIs(target(page).locator('[data-testid="reaction"][data-emoji="👍"]'), '2', 'two 👍');
      await textIs(target(page).locator('[data-testid="reaction"][data-emoji="🎉"]'), '1', 'one 🎉');
    }
  });

  test('a read receipt appears', async () => {
    await send(alice, 'did you read this?');
    await message(bob, 'did you read this?').waitFor();
    const readBy = message(alice, 'did you read this?').getByTestId('read-by');
    await textIs(readBy, /bob/, 'read by bob');
    assert.equal(await alice.getByTestId('read-by').count(), 1, 'only on the message bob read last');
  });

  test('incoming upload progress', async (t) => {
    if (!features.upload) return lacks(t, 'upload_progress', '§9.7');
    await bob.locator('#file').setInputFiles({ name: 'report.pdf', mimeType: 'application/pdf', buffer: Buffer.from('%PDF') });
    const bar = alice.getByTestId('upload-progress');
    await bar.waitFor();
    await until(async () => (await bar.getAttribute('data-percent')) === '100', 'upload at 100%');
    assert.match((await bar.getAttribute('data-upload-id')) ?? '', /^[A-Za-z0-9_-]+$/);
    assert.match((await bar.textContent()) ?? '', /bob is uploading report\.pdf: 100%/);
    assert.equal(await bob.getByTestId('upload-progress').count(), 0, 'not echoed to the uploader');
  });

  test('presence shows both online', async (t) => {
    if (!features.presence) return lacks(t, 'presence', '§9.5');
    for (const [page, other] of [[alice, 2], [bob, 1]]) {
      const u = page.locator(`[data-testid="presence-user"][data-user-id="${other}"]`);
      await until(async () => (await u.getAttribute('data-status')) === 'online', 'online');
    }
  });

  test('the call helper runs offer / answer / candidates between two peers, holding early candidates (loopback relay)', async () => {
    // Two CallManagers in one page, their call_signal frames relayed by a
    // stand-in for the gateway: the WebRTC half of calls, whatever the server.
    const context = await browser.newContext();
    await context.grantPermissions(['camera', 'microphone'], { origin: gw.origin });
    const page = await context.newPage();
    await page.goto(`${gw.origin}/`);
    const r = await page.evaluate(async () => {
      const { Emitter, CallManager } = await import('/static/chatgate.js');
      /** @type {Record<number, any>} */
      const peers = {};
      for (const [id, name] of [[1, 'alice'], [2, 'bob']]) {
        const c = /** @type {any} */ (new Emitter());
        c.callSignal = (to, call_id, kind, payload) => {
          const f = { type: 'call_signal', from_user_id: id, from_username: name, call_id, kind };
          if (payload !== undefined) f.payload = JSON.parse(JSON.stringify(payload));
          setTimeout(() => peers[to].emit('call_signal', f), 5);
          return true;
        };
        peers[id] = c;
      }
      const caller = new CallManager(peers[1]);
      const callee = new CallManager(peers[2]);
      const sleep = (ms) => new Promise((res) => setTimeout(res, ms));
      const until = async (f) => {
        for (let i = 0; i < 300 && !f(); i++) await sleep(50);
        return f();
      };
      const incoming = new Promise((res) => callee.on('incoming', res));
      const a = caller.call(2, { audio: true, video: true });
      const b = /** @type {any} */ (await incoming);
      await until(() => b._early.length > 0);
      const held = b._early.length;
      await b.accept();
      const connected = await until(() => a.state === 'connected' && b.state === 'connected');
      const video = b.remoteStream?.getVideoTracks().length ?? 0;
      a.hangup();
      const ended = await until(() => b.state === 'ended');
      // Nobody answers: the caller gives up after ringTimeout, the callee stops ringing.
      caller.options.ringTimeout = 300;
      const rung = new Promise((res) => callee.on('incoming', res));
      const c = caller.call(2, { audio: true, video: false });
      const d = /** @type {any} */ (await rung);
      const gaveUp = (await until(() => c.state === 'ended' && d.state === 'ended')) && c.endReason === 'No answer';
      return { held, connected, video, ended, aEnded: a.state === 'ended', gaveUp };
    });
    await context.close();
    assert.ok(r.held > 0, 'candidates that came before the offer was accepted were held');
    assert.deepEqual({ ...r, held: true }, { held: true, connected: true, video: 1, ended: true, aEnded: true, gaveUp: true });
  });

  test('a WebRTC call reaches connected on both and ended after hang-up', async (t) => {
    if (!features.calls) return lacks(t, 'call_signal', '§9.6');
    if (!features.presence) return lacks(t, 'presence (the page calls who is online)', '§9.5');
    const call = alice.getByTestId('call');
    await until(() => call.isEnabled(), 'call button enabled');
    await call.click();
    await textIs(alice.getByTestId('call-state'), /ringing|connecting/, 'alice rings');
    await bob.getByTestId('incoming-call').waitFor();
    await textIs(bob.getByTestId('call-state'), 'ringing', 'bob rings');
    await bob.getByTestId('accept-call').click();
    for (const page of [alice, bob]) await textIs(page.getByTestId('call-state'), 'connected', 'call connected');
    // Media flows: the remote video has frames from the other side's fake camera.
    await until(() => bob.evaluate(() => /** @type {HTMLVideoElement} */ (document.getElementById('remote-video')).videoWidth > 0), 'remote video');
    await until(() => alice.evaluate(() => /** @type {HTMLVideoElement} */ (document.getElementById('remote-video')).videoWidth > 0), 'remote video at alice');
    await screenshot(); // the README's picture: everything at once, a call included
    await alice.getByTestId('hangup').click();
    for (const page of [alice, bob]) await textIs(page.getByTestId('call-state'), 'ended', 'call ended');
  });

  test('a declined call ends on both pages', async (t) => {
    if (!features.calls || !features.presence) return lacks(t, 'call_signal / presence', '§9.5–§9.6');
    const call = alice.getByTestId('call');
    await until(() => call.isEnabled(), 'call button enabled again');
    await call.click();
    await bob.getByTestId('incoming-call').waitFor();
    await bob.getByTestId('decline-call').click();
    for (const page of [alice, bob]) await textIs(page.getByTestId('call-state'), 'ended', 'declined call ended');
    assert.equal(await bob.getByTestId('incoming-call').isVisible(), false);
  });

  test('screenshot of the page for the README', async () => {
    if (!shot) await screenshot(); // without calls, the page without a call
    assert.ok(shot);
  });

  test('after a gateway restart both pages reconnect by themselves and show every message sent meanwhile exactly once', async () => {
    const before = await message(alice, '').count();
    await gw.stop(); // SIGTERM
    for (const page of [alice, bob]) await textIs(page.getByTestId('status'), /reconnecting/, 'reconnecting');
    await new Promise((r) => setTimeout(r, 1000));
    await gw.start(); // same port, same database
    const third = rawClient(`${gw.wsUrl}/ws/chat/1/?token=${gw.token(1)}`);
    await third.ready;
    const texts = Array.from({ length: 12 }, (_, i) => `sent while away ${i}`);
    for (const [i, text] of texts.entries()) {
      third.send({ type: 'chat_message', content: text });
      if (i >= 6) await new Promise((r) => setTimeout(r, 150)); // the rest while the pages come back
    }
    await until(() => third.frames.filter((f) => f.type === 'new_message').length === texts.length, 'echoes');
    const lastSent = Math.max(...third.frames.filter((f) => f.type === 'new_message').map((f) => f.message.id));
    third.ws.close();
    for (const page of [alice, bob]) {
      await textIs(page.getByTestId('status'), /connected/, 'connected again');
      for (const text of texts) await message(page, text).first().waitFor();
      await new Promise((r) => setTimeout(r, 300));
      for (const text of texts) assert.equal(await countExact(page, text), 1, `${text} once`);
      // Came by resume (the page loads history only once): the client's resume point is the last one.
      assert.equal(await page.evaluate(() => /** @type {any} */ (window).chatgate.lastId), lastSent);
    }
    assert.equal(await message(alice, '').count(), before + texts.length, 'nothing else doubled');
    const ids = await alice.$$eval('[data-testid="message"]', (els) => els.map((e) => Number(e.getAttribute('data-id'))));
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b), 'in id order');
  });

  test('the original v1 client (websocketService.js) still chats with a v2 page', async () => {
    // The old app's page comes from its own server (another port on
    // 127.0.0.1, a host the default --allowed-origins accepts), as it would
    // in production; its client connects to the gateway.
    const app = http.createServer((req, res) => {
      const name = path.basename(new URL(req.url ?? '/', 'http://x').pathname);
      try {
        const body = readFileSync(path.join(here, 'fixtures', name));
        res.writeHead(200, { 'Content-Type': name.endsWith('.html') ? 'text/html' : 'text/javascript' });
        res.end(body);
      } catch {
        res.writeHead(404).end();
      }
    });
    await new Promise((r) => app.listen(0, '127.0.0.1', () => r(undefined)));
    const appPort = /** @type {import('node:net').AddressInfo} */ (app.address()).port;
    const context = await browser.newContext();
    context.setDefaultTimeout(15000);
    const old = await context.newPage();
    await old.goto(`http://127.0.0.1:${appPort}/v1.html#conversation=1&token=${gw.token(1)}&gateway=${gw.wsUrl}`);
    await textIs(old.locator('#state'), 'connected', 'v1 connected');
    await old.fill('#text', 'hello from the original client');
    await old.click('#send');
    const atBob = message(bob, 'hello from the original client');
    await atBob.waitFor();
    assert.equal(await atBob.getByTestId('message-sender').textContent(), 'alice');
    await send(bob, 'hi, old client');
    await textIs(old.locator('.msg').last(), 'bob: hi, old client', 'v2 message at the v1 page');
    // v2 traffic in the conversation never reaches the v1 socket.
    await atBob.locator('[data-testid="react"][data-emoji="❤️"]').click();
    await textIs(atBob.locator('[data-testid="reaction"][data-emoji="❤️"]'), '1', 'reacted');
    await send(bob, 'after the reaction');
    await until(() => old.locator('.msg', { hasText: 'after the reaction' }).count(), 'v1 got the next message');
    const types = await old.evaluate(() => [...new Set(window.received.map((f) => f.type))]);
    for (const ty of types) assert.ok(['connection_established', 'new_message', 'typing', 'message_deleted', 'error', 'ping'].includes(ty), `v1 got ${ty}`);
    await context.close();
    app.close();
  });

  test('presence turns offline when a page closes', async (t) => {
    if (!features.presence) return lacks(t, 'presence', '§9.5');
    const u = alice.locator('[data-testid="presence-user"][data-user-id="2"]');
    await until(async () => (await u.getAttribute('data-status')) === 'online', 'bob online');
    await bob.context().close();
    await until(async () => (await u.getAttribute('data-status')) === 'offline', 'bob offline', 15000);
  });
});
