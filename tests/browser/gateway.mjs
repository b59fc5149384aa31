// Starts and stops real chatgate processes for the Node and browser tests.
//
// The binary comes from CHATGATE_BIN (tests/browser.rs passes the one cargo
// built); each gateway gets a fresh directory, so its first run seeds the
// demo (alice = user 1, bob = user 2, conversation 1) and prints the two
// links a newcomer would open.

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';

export function binary() {
  const bin = process.env.CHATGATE_BIN;
  if (!bin) throw new Error('set CHATGATE_BIN to the chatgate binary (cargo test sets it)');
  return bin;
}

export class Gateway {
  /** @param {string[]} [extraArgs] more `serve` flags */
  constructor(extraArgs = []) {
    this.extraArgs = extraArgs;
    this.dir = mkdtempSync(path.join(tmpdir(), 'chatgate-browser-'));
    this.db = path.join(this.dir, 'chat.db');
    /** @type {import('node:child_process').ChildProcess | null} */
    this.proc = null;
    this.port = 0;
    /** name → link printed by the first run */
    this.links = {};
    this.log = '';
  }

  /** Starts (or starts again, on the same port and database). */
  async start() {
    const args = [
      'serve',
      '--listen', `127.0.0.1:${this.port}`,
      '--database', this.db,
      '--admin-listen', 'off',
      '--shards', '2',
      '--drain-grace', '0s',
      '--log', 'warn',
      // Tests send faster than people type.
      '--chat-rate', '1000',
      '--chat-burst', '1000',
      ...this.extraArgs,
    ];
    const proc = spawn(binary(), args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    let out = '';
    proc.stdout.on('data', (d) => (out += d));
    proc.stderr.on('data', (d) => (this.log += d));
    const exited = new Promise((resolve) => proc.once('exit', resolve));
    const deadline = Date.now() + 20000;
    const first = this.port === 0;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`chatgate exited: ${this.log}`);
      if (Date.now() > deadline) throw new Error(`chatgate did not start: ${out}${this.log}`);
      if (first) {
        const m = [...out.matchAll(/^\s+(\w+): (http:\/\/(127\.0\.0\.1:(\d+))\/#\S+)$/gm)];
        if (m.length >= 2) {
          for (const x of m) this.links[x[1]] = x[2];
          this.port = Number(m[0][4]);
          this.firstRun = out;
          break;
        }
      } else if (await this.answers()) {
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    this.exited = exited;
    return this;
  }

  async answers() {
    try {
      const r = await fetch(`http://127.0.0.1:${this.port}/`, { signal: AbortSignal.timeout(1000) });
      return r.status === 200;
    } catch {
      return false;
    }
  }

  /** SIGTERM, then wait for the process to exit. */
  async stop() {
    if (!this.proc || this.proc.exitCode !== null) return;
    this.proc.kill('SIGTERM');
    await this.exited;
    this.proc = null;
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** A token minted by `chatgate token` (the secret kept beside the database). */
  token(userId) {
    return execFileSync(binary(), ['token', '--user-id', String(userId), '--database', this.db, '--log', 'warn'])
      .toString()
      .trim();
  }

  /** The token inside a printed link. */
  tokenOf(name) {
    return new URLSearchParams(this.links[name].split('#')[1]).get('token');
  }

  async close() {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * A plain v1 socket (no subprotocol), as a third client: resolves once
 * `connection_established` arrived. `frames` collects what it receives.
 */
export function rawClient(url, { v2 = false } = {}) {
  const ws = v2 ? new WebSocket(url, ['chatgate.v2']) : new WebSocket(url);
  const frames = [];
  /** @type {((f: any) => void)[]} */
  const waiters = [];
  ws.on('message', (d) => {
    const f = JSON.parse(String(d));
    frames.push(f);
    for (const w of waiters.splice(0)) w(f);
  });
  const ready = new Promise((resolve, reject) => {
    ws.once('error', reject);
    ws.once('close', (code) => reject(new Error(`closed ${code}`)));
    const check = () => (frames.some((f) => f.type === 'connection_established') ? resolve(ws) : waiters.push(check));
    check();
  });
  return { ws, frames, ready, send: (obj) => ws.send(JSON.stringify(obj)) };
}

/** Polls `fn` until it returns a truthy value. */
export async function until(fn, what, timeout = 10000) {
  const deadline = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what} (last: ${last})`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/**
 * Which docs/protocol.md §9.5–§9.7 features the running gateway has: a v2 socket gets
 * `presence_state` on connect when presence exists; `upload_progress` and
 * `call_signal` answer `Unknown message type` when they do not.
 */
export async function serverFeatures(gw) {
  const c = rawClient(`${gw.wsUrl}/ws/chat/1/?token=${gw.tokenOf('alice')}`, { v2: true });
  await c.ready;
  // Each probe is followed by a history request, whose answer marks the end of the probe's answers.
  const probe = async (frame) => {
    const from = c.frames.length;
    c.send(frame);
    c.send({ type: 'history', limit: 1 });
    await until(() => c.frames.slice(from).some((f) => f.type === 'history'), 'the probe history');
    return !c.frames.slice(from).some((f) => f.type === 'error' && f.message === 'Unknown message type');
  };
  const upload = await probe({ type: 'upload_progress', upload_id: 'probe', file_name: 'probe', percent: 0 });
  const calls = await probe({ type: 'call_signal', to_user_id: 1, call_id: 'probe', kind: 'hangup' });
  const presence = c.frames.some((f) => f.type === 'presence_state');
  c.ws.close();
  return { presence, upload, calls };
}
