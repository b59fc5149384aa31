// @ts-check
/**
 * chatgate.js: the browser (and Node) client of the chatgate WebSocket gateway.
 *
 * One dependency-free ES module. It keeps the API and event names of the
 * original Django Channels client (`websocketService.js`: `connect`,
 * `disconnect`, `sendMessage`, `deleteMessage`, `sendTyping`, `on`/`off`;
 * events `connected`, `disconnected`, `new_message`, `typing`,
 * `message_deleted`, `error`), so an app switches by changing its import, and
 * fixes what that client gets wrong:
 *
 * - the server URL is a parameter (not `ws://localhost:8000`), or a list of
 *   them: each failed connect or dropped connection moves on to the next
 *   (round robin), so a client outlives the node it was on;
 * - reconnects use exponential backoff with full jitter (not every 3 s
 *   forever), and stop for good on 4001 / 4003 / 1008 with a `stopped` event
 *   that says why;
 * - it speaks protocol v2 (`chatgate.v2` subprotocol) and resumes with
 *   `?since=<highest id seen>`, dropping duplicates by id: an app never
 *   loses or doubles a message across a reconnect.
 *
 * v2 adds `history()`, `markRead()`, `react()`, `callSignal()`,
 * `uploadProgress()`, events for receipts, reactions, presence, call
 * signals and upload progress, and `CallManager` (calls.js), a small WebRTC
 * helper that runs the offer / answer / candidate exchange over
 * `call_signal`.
 *
 * Listeners get the server's frame as parsed JSON (as the original client
 * passed it on), e.g. `on('new_message', f => f.message.content)`.
 * The wire protocol: docs/protocol.md.
 *
 * This module is the entry point: it also exports what its siblings hold,
 * the event emitter (`emitter.js`) and the call helper (`calls.js`), so
 * `import { ChatGate, CallManager } from './chatgate.js'` keeps working.
 */

import { Emitter } from './emitter.js';

export { Emitter } from './emitter.js';
export { CallSession, CallManager } from './calls.js';

export const V2_SUBPROTOCOL = 'chatgate.v2';

/** Close codes after which reconnecting cannot help, and why. */
export const STOP_CODES = Object.freeze({
  4001: 'unauthenticated',
  4003: 'forbidden',
  1008: 'policy',
});

/**
 * @typedef {{id: number, username: string, first_name?: string, last_name?: string}} Sender
 * @typedef {{emoji: string, user_ids: number[]}} ReactionGroup
 * @typedef {{id: number, sender: Sender, content: string, timestamp: string, reactions?: ReactionGroup[]}} Message
 * @typedef {{messages: Message[], has_more: boolean}} HistoryPage
 * @typedef {{initial?: number, max?: number, factor?: number, resetAfter?: number}} BackoffOptions
 * @typedef {'ring'|'offer'|'answer'|'candidate'|'hangup'|'decline'} SignalKind
 * @typedef {'idle'|'connecting'|'connected'|'reconnecting'|'stopped'} ConnectionState
 *
 * @typedef {object} ClientOptions
 * @property {string | string[]} [url] Base URL of the gateway (`ws://host:port` or `wss://…`;
 *   `http(s)://` is turned into `ws(s)://`), or a list of the base URLs of several nodes: the first
 *   connect goes to the first, and every reconnect after a failed connect or a dropped connection
 *   to the next one (round robin, after the usual backoff delay), resuming where the last one left
 *   off. Default in a browser: the page's own origin.
 * @property {any} [WebSocket] A WebSocket implementation (Node: `import WebSocket from 'ws'`).
 *   Default: `globalThis.WebSocket`.
 * @property {boolean} [v2] Ask for protocol v2 (default true). The server may still answer v1.
 * @property {boolean} [reconnect] Reconnect after an unexpected close (default true).
 * @property {BackoffOptions} [backoff] Delays in ms: initial 500, max 30000, factor 2. The
 *   backoff starts over only once a connection has stayed up `resetAfter` ms (default 5000), so a
 *   server that admits and then drops at once is not hammered at the initial delay.
 * @property {() => number} [random] Source of jitter in [0, 1) (default `Math.random`).
 * @property {number} [since] Resume after this message id on the first connect too.
 * @property {number} [requestTimeout] ms to wait for a `history` answer (default 10000).
 */

/**
 * The delay before reconnect attempt `attempt` (0-based): "full jitter",
 * uniformly random in [0, min(max, initial · factor^attempt)).
 * @param {number} attempt
 * @param {BackoffOptions} [options]
 * @param {() => number} [random]
 * @returns {number} milliseconds
 */
export function backoffDelay(attempt, options = {}, random = Math.random) {
  const initial = options.initial ?? 500;
  const max = options.max ?? 30000;
  const factor = options.factor ?? 2;
  const cap = Math.min(max, initial * Math.pow(factor, Math.min(attempt, 60)));
  return Math.floor(random() * cap);
}

/**
 * The option `url` as a non-empty list (a string, or nothing: a list of one).
 * @param {string | string[] | undefined} url
 * @returns {(string | undefined)[]}
 */
function urlList(url) {
  if (!Array.isArray(url)) return [url];
  if (!url.length) throw new Error('chatgate: the list of URLs is empty');
  return [...url];
}

/** ws:// or wss:// base URL from an option or the page's origin. */
function baseUrl(/** @type {string | undefined} */ url) {
  let base = url;
  if (!base) {
    const loc = /** @type {any} */ (globalThis).location;
    if (!loc || !loc.host) throw new Error('chatgate: pass { url } (no page origin to default to)');
    base = `${loc.protocol === 'https:' ? 'wss:' : 'ws:'}//${loc.host}`;
  }
  return base.replace(/^http(s?):/, 'ws$1:').replace(/\/+$/, '');
}

/**
 * A connection to one conversation: the original client's API plus v2.
 *
 * Events: `connected` `{version, reconnect, url}`, `disconnected` `{code, reason,
 * willReconnect}`, `reconnecting` `{attempt, delay, url}` (`url`: the base URL
 * connected to / to be tried next), `stopped` `{code,
 * reason}` (4001 `unauthenticated`, 4003 `forbidden`, 1008 `policy`),
 * `state` (a {@link ConnectionState}), `new_message`, `typing`,
 * `message_deleted`, `error`, and v2: `resumed`, `read_state`,
 * `read_receipt`, `reaction`, `presence_state`, `presence`, `call_signal`,
 * `upload_progress`, and `gap` `{after, before}` when a resume was
 * incomplete (see {@link ChatGate#missedBetween}).
 */
export class ChatGate extends Emitter {
  /** @param {ClientOptions} [options] */
  constructor(options = {}) {
    super();
    this.options = options;
    /** The base URLs from the option `url` (one entry, `undefined`, for the page's origin). */
    this._urls = urlList(options.url);
    /** Index in `_urls` of the node the current (or next) socket goes to. */
    this._urlIndex = 0;
    /** @type {ConnectionState} */
    this.state = 'idle';
    /** 'v1' or 'v2': what the server agreed to on the current socket. */
    this.version = /** @type {'v1'|'v2'|null} */ (null);
    /** The highest message id seen (replay, live or the newest history page). */
    this.lastId = options.since ?? 0;
    /** @type {number | null} */
    this.conversationId = null;
    /** Who is online (from `presence_state` / `presence`): user id → username. */
    this.online = /** @type {Map<number, string>} */ (new Map());
    /** @type {any} */
    this._ws = null;
    /** @type {string | null} */
    this._token = null;
    this._attempt = 0;
    /** @type {any} */
    this._timer = null;
    /** Starts the backoff over once a connection has stayed up. @type {any} */
    this._stableTimer = null;
    this._wanted = false;
    /** @type {{resolve: (p: HistoryPage) => void, reject: (e: Error) => void, timer: any}[]} */
    this._pending = [];
    /** The `since` of the current socket (0: none). */
    this._since = 0;
    /** The first message replayed on the current socket, until `resumed`. @type {number | null} */
    this._firstReplayed = null;
    this._replaying = false;
  }

  /**
   * Connects to a conversation (and keeps reconnecting until `disconnect()`
   * or a stop code).
   * @param {number|string} conversationId
   * @param {string} token a simplejwt access token
   */
  connect(conversationId, token) {
    if (this.conversationId !== null && String(conversationId) !== String(this.conversationId)) {
      this.lastId = 0; // another conversation: ids of the old one mean nothing
    }
    this.disconnect();
    this.conversationId = Number(conversationId);
    this._token = token;
    this._wanted = true;
    this._attempt = 0;
    this._urlIndex = 0;
    this._open();
  }

  /** Closes the socket (1000) and stops reconnecting. */
  disconnect() {
    this._wanted = false;
    clearTimeout(this._timer);
    this._timer = null;
    clearTimeout(this._stableTimer);
    this._stableTimer = null;
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      // Keep an error handler: closing a socket that is still connecting
      // makes Node's `ws` emit an error, which is thrown when nobody listens.
      ws.onerror = () => {};
      try {
        ws.close(1000);
      } catch {
        /* already closed */
      }
      this._failPending(new Error('disconnected'));
      this.online.clear();
      this.emit('disconnected', { code: 1000, reason: 'client', willReconnect: false });
    }
    if (this.state !== 'stopped') this._setState('idle');
  }

  /**
   * The base URL of the current socket, or of the next attempt while
   * reconnecting (null when there is none: no `url` and no page origin).
   * @returns {string | null}
   */
  get url() {
    try {
      return baseUrl(this._urls[this._urlIndex]);
    } catch {
      return null;
    }
  }

  /** Whether the socket is open and the server said `connection_established`. */
  get isConnected() {
    return this.state === 'connected';
  }

  /**
   * @param {string} content
   * @returns {boolean} false when not connected (nothing was sent)
   */
  sendMessage(content) {
    return this._send({ type: 'chat_message', content });
  }

  /** @param {number} messageId deletes for this user only */
  deleteMessage(messageId) {
    return this._send({ type: 'delete_message', message_id: messageId });
  }

  /** @param {boolean} isTyping */
  sendTyping(isTyping) {
    return this._send({ type: 'typing', is_typing: !!isTyping });
  }

  /**
   * A page of older messages, oldest first (v2).
   * @param {{before?: number, limit?: number}} [query]
   * @returns {Promise<HistoryPage>}
   */
  history(query = {}) {
    if (!this.isConnected || this.version !== 'v2') {
      return Promise.reject(new Error('history needs a connected v2 socket'));
    }
    const limit = query.limit ?? 50;
    const before = query.before;
    // Checked here: the server's answer to bad values (`Invalid message
    // format`) names no request, so it could not be told apart.
    if (!Number.isInteger(limit) || limit < 1 || limit > 100) {
      return Promise.reject(new RangeError('history: limit must be an integer from 1 to 100'));
    }
    if (before != null && !(Number.isInteger(before) && before > 0)) {
      return Promise.reject(new RangeError('history: before must be a positive message id'));
    }
    /** @type {any} */
    const frame = { type: 'history', limit };
    if (before != null) frame.before = before;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this._pending.findIndex((p) => p.timer === timer);
        if (i >= 0) this._pending.splice(i, 1);
        reject(new Error('history: no answer'));
      }, this.options.requestTimeout ?? 10000);
      this._pending.push({
        resolve: (page) => {
          // The newest page moves the resume point: a reconnect asks only for what came after.
          if (query.before == null && page.messages.length) {
            this.lastId = Math.max(this.lastId, page.messages[page.messages.length - 1].id);
          }
          resolve(page);
        },
        reject,
        timer,
      });
      this._send(frame);
    });
  }

  /**
   * The messages with `after < id < before`, oldest first, paged with
   * `history` (for a `gap` event: what a resume left out).
   * @param {{after: number, before: number}} gap
   * @returns {Promise<Message[]>}
   */
  async missedBetween(gap) {
    /** @type {Message[]} */
    const out = [];
    let before = gap.before;
    for (;;) {
      const page = await this.history({ before, limit: 100 });
      const wanted = page.messages.filter((m) => m.id > gap.after);
      out.unshift(...wanted);
      if (!page.has_more || wanted.length < page.messages.length || !page.messages.length) return out;
      before = page.messages[0].id;
    }
  }

  /** @param {number} messageId the newest message this user has seen (v2) */
  markRead(messageId) {
    return this._v2({ type: 'mark_read', message_id: messageId });
  }

  /**
   * @param {number} messageId
   * @param {string} emoji
   * @param {boolean} [on] false removes this user's reaction
   */
  react(messageId, emoji, on = true) {
    return this._v2({ type: 'react', message_id: messageId, emoji, on });
  }

  /**
   * Relays a call signal to another participant (v2).
   * @param {number} toUserId
   * @param {string} callId 1–64 of [A-Za-z0-9_-]
   * @param {SignalKind} kind
   * @param {any} [payload]
   */
  callSignal(toUserId, callId, kind, payload) {
    /** @type {any} */
    const frame = { type: 'call_signal', to_user_id: toUserId, call_id: callId, kind };
    if (payload !== undefined) frame.payload = payload;
    return this._v2(frame);
  }

  /**
   * Tells the other participants how far an upload is (v2; the file itself
   * goes to the application's HTTP API).
   * @param {string} uploadId 1–64 of [A-Za-z0-9_-]
   * @param {string} fileName
   * @param {number} percent 0–100
   */
  uploadProgress(uploadId, fileName, percent) {
    const p = Math.max(0, Math.min(100, Math.round(percent)));
    return this._v2({ type: 'upload_progress', upload_id: uploadId, file_name: fileName, percent: p });
  }

  // --- internals ---------------------------------------------------------

  /** @param {ConnectionState} s */
  _setState(s) {
    if (this.state === s) return;
    this.state = s;
    this.emit('state', s);
  }

  /** @param {object} frame */
  _v2(frame) {
    return this.version === 'v2' && this._send(frame);
  }

  /** @param {object} frame */
  _send(frame) {
    const ws = this._ws;
    if (!ws || ws.readyState !== 1 || this.state !== 'connected') return false;
    ws.send(JSON.stringify(frame));
    return true;
  }

  _url() {
    const base = baseUrl(this._urls[this._urlIndex]);
    let url = `${base}/ws/chat/${this.conversationId}/?token=${encodeURIComponent(this._token ?? '')}`;
    this._since = this.options.v2 !== false && this.lastId > 0 ? this.lastId : 0;
    if (this._since) url += `&since=${this._since}`;
    return url;
  }

  _open() {
    const WS = this.options.WebSocket ?? /** @type {any} */ (globalThis).WebSocket;
    if (!WS) throw new Error('chatgate: no WebSocket implementation (pass { WebSocket })');
    this._setState(this._attempt === 0 ? 'connecting' : 'reconnecting');
    /** @type {any} */
    let ws;
    try {
      ws = this.options.v2 === false ? new WS(this._url()) : new WS(this._url(), [V2_SUBPROTOCOL]);
    } catch (e) {
      this.emit('error', { type: 'error', message: `cannot open the socket: ${e}` });
      this._scheduleReconnect();
      return;
    }
    this._ws = ws;
    ws.onmessage = (/** @type {{data: any}} */ ev) => this._onFrame(ws, ev.data);
    ws.onerror = () => {
      // A close event always follows; it decides what happens next.
    };
    ws.onclose = (/** @type {{code: number, reason: string}} */ ev) => this._onClose(ws, ev.code, ev.reason);
  }

  /**
   * @param {any} ws
   * @param {any} data
   */
  _onFrame(ws, data) {
    if (ws !== this._ws) return;
    let f;
    try {
      f = JSON.parse(typeof data === 'string' ? data : String(data));
    } catch {
      return;
    }
    switch (f.type) {
      case 'connection_established': {
        this.version = ws.protocol === V2_SUBPROTOCOL ? 'v2' : 'v1';
        const reconnect = this._attempt > 0;
        clearTimeout(this._stableTimer);
        this._stableTimer = setTimeout(() => {
          this._stableTimer = null;
          if (ws === this._ws) this._attempt = 0;
        }, this.options.backoff?.resetAfter ?? 5000);
        this.online.clear();
        this._replaying = this.version === 'v2' && this._since > 0;
        this._firstReplayed = null;
        this._setState('connected');
        this.emit('connected', { version: this.version, reconnect, url: this.url });
        return;
      }
      case 'new_message': {
        const id = f.message?.id;
        // Ids of a conversation increase in delivery order: anything at or
        // below the highest one seen was delivered already (replay overlap,
        // a duplicate, an item of the newest history page).
        if (typeof id === 'number') {
          if (id <= this.lastId) return;
          this.lastId = id;
          if (this._replaying && this._firstReplayed === null) this._firstReplayed = id;
        }
        this.emit('new_message', f);
        return;
      }
      case 'history': {
        const p = this._pending.shift();
        if (p) {
          clearTimeout(p.timer);
          p.resolve({ messages: f.messages ?? [], has_more: !!f.has_more });
        }
        return;
      }
      case 'resumed':
        this._replaying = false;
        if (typeof f.last_id === 'number') this.lastId = Math.max(this.lastId, f.last_id);
        this.emit('resumed', f);
        // More were missed than the server replays (--resume-max): say which
        // ids are still missing; `missedBetween(gap)` pages them in.
        if (f.complete === false && this._firstReplayed !== null) {
          this.emit('gap', { after: this._since, before: this._firstReplayed });
        }
        return;
      case 'presence_state':
        this.online.clear();
        for (const u of f.online ?? []) this.online.set(u.user_id, u.username);
        this.emit('presence_state', f);
        return;
      case 'presence':
        if (f.status === 'online') this.online.set(f.user_id, f.username);
        else this.online.delete(f.user_id);
        this.emit('presence', f);
        return;
      case 'ping':
        return;
      case 'error':
        // Replies keep the order of requests (docs/protocol.md §3, §9.9): a failed
        // history request is the oldest one still waiting.
        if (f.message === 'Failed to load history') {
          const p = this._pending.shift();
          if (p) {
            clearTimeout(p.timer);
            p.reject(new Error(f.message));
          }
        }
        this.emit('error', f);
        return;
      default:
        this.emit(f.type, f);
    }
  }

  /**
   * @param {any} ws
   * @param {number} code
   * @param {string} reason
   */
  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    clearTimeout(this._stableTimer);
    this._stableTimer = null;
    this._failPending(new Error(`socket closed (${code})`));
    this.online.clear();
    const stop = /** @type {Record<number, string>} */ (STOP_CODES)[code];
    const willReconnect = this._wanted && !stop && this.options.reconnect !== false;
    this.emit('disconnected', { code, reason, willReconnect });
    if (stop) {
      this._wanted = false;
      this._setState('stopped');
      this.emit('stopped', { code, reason: stop });
      return;
    }
    if (willReconnect) this._scheduleReconnect();
    else this._setState('idle');
  }

  /** After a failed connect or a dropped connection: the next URL of the list, after a backoff delay. */
  _scheduleReconnect() {
    const delay = backoffDelay(this._attempt, this.options.backoff, this.options.random);
    this._attempt += 1;
    this._urlIndex = (this._urlIndex + 1) % this._urls.length;
    this._setState('reconnecting');
    this.emit('reconnecting', { attempt: this._attempt, delay, url: this.url });
    clearTimeout(this._timer);
    this._timer = setTimeout(() => {
      this._timer = null;
      if (this._wanted) this._open();
    }, delay);
  }

  /** @param {Error} err */
  _failPending(err) {
    for (const p of this._pending.splice(0)) {
      clearTimeout(p.timer);
      p.reject(err);
    }
  }
}

/** A client for the page's own origin, like the original module's default export. */
const defaultClient = /** @type {ChatGate} */ (
  /** @type {any} */ (typeof globalThis.location === 'object' ? new ChatGate() : null)
);
export default defaultClient;
