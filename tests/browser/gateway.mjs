// Starts and stops real chatgate processes for the Node and browser tests.
//
// The binary comes from CHATGATE_BIN (tests/browser.rs passes the one cargo
// built); each gateway gets a fresh directory, so its first run seeds the
// demo (alice = user 1, bob = user 2, conversation 1) and prints the two
// links a newcomer would open. A gateway given `{ cluster }` is instead one
// node on a shared Postgres database and Redis (see `PgRedis`).

import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer, connect as tcpConnect } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import WebSocket from 'ws';

export function binary() {
  const bin = process.env.CHATGATE_BIN;
  if (!bin) throw new Error('set CHATGATE_BIN to the chatgate binary (cargo test sets it)');
  return bin;
}

export class Gateway {
  /**
   * @param {string[]} [extraArgs] more `serve` flags
   * @param {{cluster?: PgRedis, nodeId?: string}} [node] a node of `cluster` (Postgres and Redis)
   *   instead of a gateway on its own SQLite file
   */
  constructor(extraArgs = [], node = {}) {
    this.extraArgs = extraArgs;
    this.cluster = node.cluster ?? null;
    this.nodeId = node.nodeId ?? 'n1';
    this.dir = mkdtempSync(path.join(tmpdir(), 'chatgate-browser-'));
    this.db = path.join(this.dir, 'chat.db');
    /** @type {import('node:child_process').ChildProcess | null} */
    this.proc = null;
    this.port = 0;
    this.adminPort = 0;
    /** name → link printed by the first run */
    this.links = {};
    this.log = '';
  }

  /** Starts (or starts again, on the same port and database). */
  async start() {
    if (this.cluster) return this.startNode();
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

  /**
   * A node of `this.cluster`: on ports picked at its first start (kept for
   * restarts), ready once its `/readyz` says 200 (listening, bridge
   * connected, not draining).
   */
  async startNode() {
    const cluster = /** @type {PgRedis} */ (this.cluster);
    if (!this.port) this.port = await freePort();
    if (!this.adminPort) this.adminPort = await freePort();
    const args = [
      'serve',
      '--listen', `127.0.0.1:${this.port}`,
      '--admin-listen', `127.0.0.1:${this.adminPort}`,
      '--database-url', cluster.dbUrl,
      '--redis-url', cluster.redisUrl,
      '--redis-prefix', cluster.prefix,
      '--node-id', this.nodeId,
      '--demo', 'false',
      '--shards', '2',
      '--log', 'warn',
      '--chat-rate', '1000',
      '--chat-burst', '1000',
      ...this.extraArgs,
    ];
    const proc = spawn(binary(), args, { stdio: ['ignore', 'ignore', 'pipe'], env: cluster.env });
    this.proc = proc;
    proc.stderr.on('data', (d) => (this.log += d));
    this.exited = new Promise((resolve) => proc.once('exit', resolve));
    const deadline = Date.now() + 20000;
    for (;;) {
      if (proc.exitCode !== null || proc.signalCode !== null) throw new Error(`chatgate ${this.nodeId} exited: ${this.log}`);
      if (Date.now() > deadline) throw new Error(`chatgate ${this.nodeId} not ready: ${this.log}`);
      if (await this.ready()) return this;
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  /** Whether the admin listener's `/readyz` answers 200. */
  async ready() {
    try {
      const r = await fetch(`http://127.0.0.1:${this.adminPort}/readyz`, { signal: AbortSignal.timeout(1000) });
      return r.status === 200;
    } catch {
      return false;
    }
  }

  /** SIGTERM, then wait for the process to exit. */
  async stop() {
    await this.kill('SIGTERM');
  }

  /**
   * Sends `signal` (SIGKILL: the node dies without closing anything) and
   * waits for the process to exit.
   * @param {NodeJS.Signals} signal
   */
  async kill(signal) {
    if (!this.proc || this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill(signal);
    await this.exited;
    this.proc = null;
  }

  get origin() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}`;
  }

  /** A token minted by `chatgate token` (the secret kept beside the database, or the cluster's). */
  token(userId) {
    if (this.cluster) return this.cluster.token(userId);
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

/** A free TCP port on 127.0.0.1 (bound once and released). */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (srv.address());
      srv.close(() => resolve(port));
    });
  });
}

function inCi() {
  const v = process.env.CI;
  return !!v && v !== 'false' && v !== '0';
}

/**
 * A fresh Postgres database (migrated by `chatgate migrate`) and a Redis
 * channel prefix of its own, for several gateway nodes; the JWT secret is
 * passed to every process in `CHATGATE_JWT_SECRET`.
 *
 * Postgres: `CHATGATE_TEST_POSTGRES` (a server URL without a database,
 * default `postgres://postgres@127.0.0.1:5432`, read and written with
 * `psql`); Redis: `REDIS_URL` (default `redis://127.0.0.1:6379/`), as the
 * Rust tests. `PgRedis.unavailable()` says why they cannot be used.
 */
export class PgRedis {
  static server = (process.env.CHATGATE_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432').replace(/\/+$/, '');
  static redis = process.env.REDIS_URL ?? 'redis://127.0.0.1:6379/';

  /** null when both answer, else why not. */
  static async unavailable() {
    try {
      psql(`${PgRedis.server}/postgres`, 'SELECT 1');
    } catch (e) {
      return `Postgres at ${PgRedis.server} (psql): ${String(e).split('\n')[0]}`;
    }
    try {
      const pong = await redisCommand(['PING'], (r) => r.endsWith('\r\n'));
      if (!pong.startsWith('+PONG')) throw new Error(pong.trim());
    } catch (e) {
      return `Redis at ${PgRedis.redis} (PING): ${e}`;
    }
    return null;
  }

  /**
   * When Postgres or Redis cannot be used: skips `t` with the reason, or
   * fails in CI (`CI` set), where every scenario must run. Returns whether to go on.
   * @param {import('node:test').TestContext} t
   */
  static async requireOr(t) {
    const why = await PgRedis.unavailable();
    if (!why) return true;
    if (inCi()) throw new Error(`unreachable in CI: ${why}`);
    t.skip(`unreachable: ${why} (set CI=true to make this a failure)`);
    return false;
  }

  /** @param {string} name a test name, part of the database name and Redis prefix */
  constructor(name) {
    const unique = `${name}_${process.pid}_${Date.now().toString(36)}`;
    this.dbName = `chatgate_js_${unique}`.toLowerCase();
    this.dbUrl = `${PgRedis.server}/${this.dbName}`;
    this.redisUrl = PgRedis.redis;
    this.prefix = `chatgate-js-${unique}`;
    this.env = { ...process.env, CHATGATE_JWT_SECRET: `js-${unique}-secret` };
    psql(`${PgRedis.server}/postgres`, `CREATE DATABASE "${this.dbName}"`);
    this.cli(['migrate']);
  }

  /**
   * Runs a chatgate command on this database; its stdout, trimmed.
   * @param {string[]} args
   */
  cli(args) {
    return execFileSync(binary(), [...args, '--database-url', this.dbUrl, '--log', 'warn'], { env: this.env })
      .toString()
      .trim();
  }

  /** @param {string} username @returns {number} the new user's id */
  addUser(username) {
    return Number(this.cli(['user', 'add', '--username', username]));
  }

  /** @param {number[]} members @returns {number} the conversation's id */
  conversation(members) {
    return Number(this.cli(['conversation', 'create', '--members', members.join(',')]));
  }

  /** @param {number} userId */
  token(userId) {
    return this.cli(['token', '--user-id', String(userId)]);
  }

  /**
   * Answer rows of a query on this database, each a list of columns.
   * @param {string} sql
   * @returns {string[][]}
   */
  query(sql) {
    const out = psql(this.dbUrl, sql);
    return out ? out.split('\n').map((l) => l.split('|')) : [];
  }

  /** Drops the database (its nodes must be stopped). */
  drop() {
    psql(`${PgRedis.server}/postgres`, `DROP DATABASE IF EXISTS "${this.dbName}" WITH (FORCE)`);
  }
}

/**
 * @param {string} url
 * @param {string} sql
 */
function psql(url, sql) {
  return execFileSync('psql', [url, '-X', '-q', '-At', '-v', 'ON_ERROR_STOP=1', '-c', sql], {
    stdio: ['ignore', 'pipe', 'pipe'],
    timeout: 10000,
  })
    .toString()
    .trim();
}

/**
 * Sends one command to Redis (`REDIS_URL`, default `redis://127.0.0.1:6379/`)
 * on a short-lived connection; resolves with the raw reply once `complete`
 * says it is whole.
 * @param {string[]} args
 * @param {(reply: string) => boolean} complete
 * @returns {Promise<string>}
 */
function redisCommand(args, complete) {
  const url = new URL(PgRedis.redis);
  return new Promise((resolve, reject) => {
    const sock = tcpConnect(Number(url.port || 6379), url.hostname || '127.0.0.1');
    let got = '';
    sock.setTimeout(2000, () => (sock.destroy(), reject(new Error('Redis: no answer'))));
    sock.on('error', reject);
    sock.on('connect', () =>
      sock.write(`*${args.length}\r\n${args.map((a) => `$${Buffer.byteLength(a)}\r\n${a}\r\n`).join('')}`),
    );
    sock.on('data', (d) => {
      got += d;
      if (complete(got)) {
        sock.destroy();
        resolve(got);
      }
    });
  });
}

/**
 * How many clients (nodes) subscribe to a Redis channel (`PUBSUB NUMSUB`).
 * @param {string} channel
 */
export async function redisNumsub(channel) {
  const reply = await redisCommand(['PUBSUB', 'NUMSUB', channel], (r) => /:\d+\r\n$/.test(r));
  return Number(/:(\d+)\r\n$/.exec(reply)?.[1]);
}
