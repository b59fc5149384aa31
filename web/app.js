// @ts-check
/**
 * The demo chat page: one conversation, every feature of the protocol, on
 * chatgate.js. Opened as `/#conversation=<id>&token=<jwt>`: the token stays
 * in the fragment, which browsers never send to a server.
 *
 * The `data-testid` attributes are a contract the browser tests (and other
 * people's tests) rely on: see issue 13 and tests/browser/.
 */
import { ChatGate, CallManager } from './chatgate.js';

const EMOJI = ['👍', '❤️', '😂', '🎉'];
const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));

const params = new URLSearchParams(location.hash.slice(1));
const conversation = params.get('conversation');
const token = params.get('token');

/** The user id in the token (shown and compared, never trusted: the server checks the token). */
function userIdOf(/** @type {string} */ jwt) {
  try {
    const b64 = jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const claims = JSON.parse(atob(b64));
    return Number(claims[params.get('claim') ?? 'user_id']);
  } catch {
    return NaN;
  }
}

/**
 * What the panels share: the client, the call helper, who this user is and
 * the call on screen (one at a time).
 * @typedef {object} Page
 * @property {ChatGate} client
 * @property {CallManager} calls
 * @property {number} me the user id in the token
 * @property {import('./chatgate.js').CallSession | null} call
 */

/** @type {Map<number, string>} user id → username */
const names = new Map();
const nameOf = (/** @type {number} */ id) => names.get(id) ?? `user ${id}`;

/** @type {Map<number, {msg: any, el: HTMLElement, reactions: Map<string, Set<number>>}>} */
const shown = new Map();
/** @type {Map<number, number>} user id → read position */
const reads = new Map();
/** @type {Map<number, any>} user id → clear timer of a typing indicator */
const typists = new Map();
/** @type {Map<number, 'online'|'offline'>} */
const presence = new Map();
let presenceKnown = false;
let historyLoaded = false;
let lastMarked = 0;

function iceServers() {
  const fromUrl = params.get('ice');
  const raw = fromUrl ?? localStorage.getItem('chatgate.iceServers') ?? '[]';
  try {
    const v = JSON.parse(raw);
    return Array.isArray(v) ? v : [];
  } catch {
    return [];
  }
}

if (!conversation || !token) {
  $('setup').hidden = false;
  $('people').hidden = true;
  document.querySelector('main')?.setAttribute('hidden', '');
  setStatus('offline: no conversation or token in the link');
} else {
  start(conversation, token);
}

/** @param {string} text */
function setStatus(text) {
  const el = document.querySelector('[data-testid="status"]');
  if (el) el.textContent = text;
  el?.setAttribute('data-state', text.split(/[ :·]/)[0]);
}

/**
 * Wires each panel of the page to one client, then connects.
 * @param {string} conversationId
 * @param {string} jwt
 */
function start(conversationId, jwt) {
  $('title').textContent = `· conversation ${conversationId}`;
  document.title = `chatgate · conversation ${conversationId}`;
  const client = new ChatGate();
  // For debugging and for tests that want to look inside: the page's client.
  /** @type {any} */ (window).chatgate = client;
  /** @type {Page} */
  const page = {
    client,
    calls: new CallManager(client, { iceServers: iceServers() }),
    me: userIdOf(jwt),
    call: null,
  };
  connectionPanel(page);
  typingPanel(page);
  messagesPanel(page);
  reactionsPanel(page);
  readsPanel(page);
  composerPanel(page);
  presencePanel(page);
  uploadsPanel(page);
  callsPanel(page);
  client.connect(conversationId, jwt);
}

// --- connection state ---

/** The status line follows the socket. @param {Page} page */
function connectionPanel(page) {
  const { client } = page;
  client.on('state', (s) => {
    if (s === 'connecting') setStatus('connecting…');
    if (s === 'idle') setStatus('offline');
  });
  client.on('reconnecting', ({ attempt, delay }) =>
    setStatus(`reconnecting (attempt ${attempt}, in ${(delay / 1000).toFixed(1)} s)`),
  );
  client.on('stopped', ({ code, reason }) => {
    const why = { unauthenticated: 'the token was not accepted', forbidden: 'not a participant of this conversation', policy: 'closed by the server’s policy' }[reason];
    setStatus(`offline: ${why} (${code})`);
  });
  client.on('connected', ({ version }) => {
    setStatus(`connected · protocol ${version}`);
    updateCallButton(page);
  });
}

// --- messages ---

/** The list: history, live messages, resume gaps, deletions, errors. @param {Page} page */
function messagesPanel(page) {
  const { client } = page;
  client.on('connected', ({ version }) => {
    if (version === 'v2' && !historyLoaded) loadNewest(page);
  });
  client.on('new_message', (f) => {
    addMessage(page, f.message);
    stopTyping(f.message.sender.id);
    markRead(page);
  });
  // A resume that could not replay everything: page in what it left out.
  client.on('gap', async (gap) => {
    try {
      (await client.missedBetween(gap)).forEach((m) => addMessage(page, m));
    } catch {
      flash('Some missed messages could not be loaded.');
    }
  });
  client.on('message_deleted', (f) => {
    const m = shown.get(f.message_id);
    if (m) {
      m.el.remove();
      shown.delete(f.message_id);
      renderReads(page);
    }
  });
  client.on('error', (f) => flash(f.message));

  $('older').addEventListener('click', async () => {
    const oldest = Math.min(...shown.keys());
    const older = await client.history({ before: Number.isFinite(oldest) ? oldest : undefined, limit: 50 });
    older.messages.forEach((m) => addMessage(page, m));
    $('older').hidden = !older.has_more;
  });
}

/** The newest page of history, once (v2). @param {Page} page */
async function loadNewest(page) {
  historyLoaded = true;
  try {
    const newest = await page.client.history({ limit: 50 });
    newest.messages.forEach((m) => addMessage(page, m));
    $('older').hidden = !newest.has_more;
    markRead(page);
  } catch {
    historyLoaded = false;
  }
}

/**
 * Shows a message once, in id order whatever order pages and live messages arrive in.
 * @param {Page} page
 * @param {any} msg
 */
function addMessage(page, msg) {
  if (shown.has(msg.id)) return;
  names.set(msg.sender.id, msg.sender.username);
  const li = messageItem(page, msg);
  /** @type {Map<string, Set<number>>} */
  const reactions = new Map();
  for (const r of msg.reactions ?? []) reactions.set(r.emoji, new Set(r.user_ids));
  shown.set(msg.id, { msg, el: li, reactions });
  const list = $('messages');
  const after = [...list.children].find((c) => Number(/** @type {HTMLElement} */ (c).dataset.id) > msg.id);
  list.insertBefore(li, after ?? null);
  renderReactions(page, msg.id);
  renderReads(page);
  updateCallButton(page);
  if (!after) li.scrollIntoView({ block: 'nearest' });
}

/**
 * A message's list item: sender, time, content, reaction counts and actions.
 * @param {Page} page
 * @param {any} msg
 */
function messageItem(page, msg) {
  const { me } = page;
  const li = document.createElement('li');
  li.className = msg.sender.id === me ? 'message mine' : 'message';
  li.dataset.testid = 'message';
  li.dataset.id = String(msg.id);
  const head = document.createElement('div');
  head.className = 'head';
  const sender = document.createElement('span');
  sender.className = 'sender';
  sender.dataset.testid = 'message-sender';
  sender.textContent = msg.sender.username;
  const time = document.createElement('time');
  time.dateTime = msg.timestamp;
  time.textContent = new Date(msg.timestamp).toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
  head.append(sender, time);
  const content = document.createElement('div');
  content.className = 'content';
  content.dataset.testid = 'message-content';
  content.textContent = msg.content;
  const bar = document.createElement('div');
  bar.className = 'bar';
  const counts = document.createElement('span');
  counts.className = 'reactions';
  bar.append(counts, messageActions(page, msg));
  li.append(head, content, bar);
  return li;
}

/**
 * A message's buttons: one per reaction emoji (toggles this user's), delete.
 * @param {Page} page
 * @param {any} msg
 */
function messageActions(page, msg) {
  const { client, me } = page;
  const actions = document.createElement('span');
  actions.className = 'actions';
  for (const e of EMOJI) {
    const b = document.createElement('button');
    b.type = 'button';
    b.dataset.testid = 'react';
    b.dataset.emoji = e;
    b.textContent = e;
    b.title = `React with ${e}`;
    b.addEventListener('click', () => {
      const mine = shown.get(msg.id)?.reactions.get(e)?.has(me);
      client.react(msg.id, e, !mine);
    });
    actions.append(b);
  }
  const del = document.createElement('button');
  del.type = 'button';
  del.dataset.testid = 'delete';
  del.textContent = '🗑';
  del.title = 'Delete for me';
  del.addEventListener('click', () => client.deleteMessage(msg.id));
  actions.append(del);
  return actions;
}

// --- reactions ---

/** @param {Page} page */
function reactionsPanel(page) {
  page.client.on('reaction', (f) => {
    names.set(f.user_id, f.username);
    const m = shown.get(f.message_id);
    if (!m) return;
    let set = m.reactions.get(f.emoji);
    if (!set) m.reactions.set(f.emoji, (set = new Set()));
    if (f.on) set.add(f.user_id);
    else set.delete(f.user_id);
    renderReactions(page, f.message_id);
  });
}

/**
 * @param {Page} page
 * @param {number} id
 */
function renderReactions(page, id) {
  const m = shown.get(id);
  if (!m) return;
  const box = /** @type {HTMLElement} */ (m.el.querySelector('.reactions'));
  box.replaceChildren();
  for (const [emoji, users] of m.reactions) {
    if (!users.size) continue;
    const s = document.createElement('span');
    s.className = users.has(page.me) ? 'reaction mine' : 'reaction';
    s.dataset.testid = 'reaction';
    s.dataset.emoji = emoji;
    s.title = `${emoji} ${[...users].map(nameOf).join(', ')}`;
    // The element's text is the count (the contract); CSS draws the emoji from data-emoji.
    s.textContent = String(users.size);
    box.append(s);
  }
}

// --- read receipts ---

/** @param {Page} page */
function readsPanel(page) {
  const { client } = page;
  document.addEventListener('visibilitychange', () => markRead(page));
  client.on('read_state', (f) => {
    reads.clear();
    for (const r of f.receipts) reads.set(r.user_id, r.message_id);
    renderReads(page);
  });
  client.on('read_receipt', (f) => {
    names.set(f.user_id, f.username);
    reads.set(f.user_id, Math.max(reads.get(f.user_id) ?? 0, f.message_id));
    renderReads(page);
  });
}

/** Tells the server the newest message shown, while the page is visible. @param {Page} page */
function markRead(page) {
  if (document.visibilityState !== 'visible') return;
  const newest = Math.max(0, ...shown.keys());
  if (newest > lastMarked && page.client.markRead(newest)) lastMarked = newest;
}

/** "Read by …" under the newest shown message each other reader reached. @param {Page} page */
function renderReads(page) {
  document.querySelectorAll('[data-testid="read-by"]').forEach((e) => e.remove());
  /** @type {Map<number, string[]>} message id → readers */
  const at = new Map();
  const ids = [...shown.keys()].sort((a, b) => a - b);
  for (const [user, pos] of reads) {
    if (user === page.me) continue;
    let target = 0;
    for (const id of ids) if (id <= pos) target = id;
    if (!target) continue;
    at.set(target, [...(at.get(target) ?? []), nameOf(user)]);
  }
  for (const [id, who] of at) {
    const s = document.createElement('div');
    s.className = 'read-by';
    s.dataset.testid = 'read-by';
    s.textContent = `Read by ${who.join(', ')}`;
    shown.get(id)?.el.append(s);
  }
}

// --- who is typing ---

/** The line under the list: who else is typing. @param {Page} page */
function typingPanel(page) {
  const { client } = page;
  client.on('disconnected', () => {
    for (const id of [...typists.keys()]) stopTyping(id);
  });
  client.on('typing', (f) => {
    names.set(f.user_id, f.username);
    if (!f.is_typing) return stopTyping(f.user_id);
    clearTimeout(typists.get(f.user_id));
    // A lost "stopped typing" must not leave the line up forever.
    typists.set(f.user_id, setTimeout(() => stopTyping(f.user_id), 6000));
    renderTyping();
  });
}

/** @param {number} id */
function stopTyping(id) {
  if (!typists.has(id)) return;
  clearTimeout(typists.get(id));
  typists.delete(id);
  renderTyping();
}

function renderTyping() {
  const who = [...typists.keys()].map(nameOf);
  const el = /** @type {HTMLElement} */ (document.querySelector('[data-testid="typing"]'));
  el.textContent = who.length ? `${who.join(', ')} ${who.length > 1 ? 'are' : 'is'} typing…` : '';
}

// --- composer ---

/** The input and send: this user's own typing state, and sending. @param {Page} page */
function composerPanel(page) {
  const { client } = page;
  let typing = false;
  /** @type {any} */
  let typingIdle = null;
  let typingSentAt = 0;
  const composer = /** @type {HTMLInputElement} */ ($('composer'));
  composer.addEventListener('input', () => {
    clearTimeout(typingIdle);
    if (!composer.value) {
      if (typing) client.sendTyping(false);
      typing = false;
      return;
    }
    // A state, like the server treats it: say "typing" once a second at most.
    if (!typing || Date.now() - typingSentAt > 1000) {
      typing = client.sendTyping(true);
      typingSentAt = Date.now();
    }
    typingIdle = setTimeout(() => {
      if (typing) client.sendTyping(false);
      typing = false;
    }, 3000);
  });
  $('form').addEventListener('submit', (e) => {
    e.preventDefault();
    const text = composer.value.trim();
    if (!text) return;
    if (client.sendMessage(text)) {
      composer.value = '';
      clearTimeout(typingIdle);
      if (typing) client.sendTyping(false);
      typing = false;
    } else {
      flash('Not connected: the message was not sent.');
    }
  });
}

// --- presence ---

/** @param {Page} page */
function presencePanel(page) {
  const { client } = page;
  client.on('presence_state', (f) => {
    presenceKnown = true;
    for (const id of presence.keys()) presence.set(id, 'offline');
    for (const u of f.online) {
      names.set(u.user_id, u.username);
      presence.set(u.user_id, 'online');
    }
    renderPresence(page);
  });
  client.on('presence', (f) => {
    presenceKnown = true;
    names.set(f.user_id, f.username);
    presence.set(f.user_id, f.status);
    renderPresence(page);
  });
}

/** This user first, then the others by id. @param {Page} page */
function renderPresence(page) {
  const { me } = page;
  const ul = $('presence');
  ul.replaceChildren();
  const ids = [...presence.keys()].sort((a, b) => (a === me ? -1 : b === me ? 1 : a - b));
  for (const id of ids) {
    const li = document.createElement('li');
    li.dataset.testid = 'presence-user';
    li.dataset.userId = String(id);
    li.dataset.status = presence.get(id);
    li.textContent = id === me ? `${nameOf(id)} (you)` : nameOf(id);
    li.title = presence.get(id) ?? '';
    ul.append(li);
  }
  updateCallButton(page);
}

// --- upload progress ---

/** @param {Page} page */
function uploadsPanel(page) {
  const { client } = page;
  client.on('upload_progress', showUpload);
  $('file').addEventListener('change', (e) => {
    const input = /** @type {HTMLInputElement} */ (e.target);
    const file = input.files?.[0];
    if (!file) return;
    // The demo has no file API: it sends the progress a real upload would
    // report (XMLHttpRequest upload.onprogress) over two seconds.
    const id = `up_${Date.now().toString(36)}_${Math.floor(Math.random() * 1e6)}`;
    let p = 0;
    const tick = setInterval(() => {
      client.uploadProgress(id, file.name.slice(0, 255) || 'file', p);
      if (p >= 100) clearInterval(tick);
      p = Math.min(100, p + 10);
    }, 200);
    input.value = '';
  });
}

/** One bar per upload, updated in place. @param {any} f an `upload_progress` frame */
function showUpload(f) {
  let el = /** @type {HTMLElement | null} */ (
    document.querySelector(`[data-testid="upload-progress"][data-upload-id="${CSS.escape(f.upload_id)}"]`)
  );
  if (!el) {
    el = document.createElement('div');
    el.className = 'upload';
    el.dataset.testid = 'upload-progress';
    el.dataset.uploadId = f.upload_id;
    el.append(document.createElement('span'), document.createElement('progress'));
    $('uploads').append(el);
  }
  el.dataset.percent = String(f.percent);
  /** @type {HTMLElement} */ (el.firstChild).textContent = `${f.username} is uploading ${f.file_name}: ${f.percent}%`;
  const bar = /** @type {HTMLProgressElement} */ (el.lastChild);
  bar.max = 100;
  bar.value = f.percent;
  el.classList.toggle('done', f.percent >= 100);
}

// --- calls ---

/** The call button, the incoming-call bar, the videos and the ICE settings. @param {Page} page */
function callsPanel(page) {
  const { calls } = page;
  const ice = /** @type {HTMLTextAreaElement} */ ($('ice'));
  ice.value = JSON.stringify(iceServers(), null, 1);
  $('ice-save').addEventListener('click', () => {
    try {
      const v = JSON.parse(ice.value);
      if (!Array.isArray(v)) throw new Error('not a list');
      localStorage.setItem('chatgate.iceServers', JSON.stringify(v));
      calls.options.iceServers = v;
      flash('ICE servers saved.');
    } catch (err) {
      flash(`ICE servers: ${err}`);
    }
  });
  calls.on('call', (s) => trackCall(page, s));
  $('call').addEventListener('click', () => {
    const who = callee(page);
    if (who == null || page.call) return;
    calls.options.iceServers = iceServers();
    calls.call(who, { audio: true, video: true, name: nameOf(who) });
  });
  $('accept').addEventListener('click', () => page.call?.accept());
  $('decline').addEventListener('click', () => page.call?.decline());
  $('hangup').addEventListener('click', () => page.call?.hangup());
}

/** The other participant to call: someone online, else anyone seen. @param {Page} page */
function callee(page) {
  const online = [...presence].find(([id, s]) => id !== page.me && s === 'online');
  if (online) return online[0];
  if (presenceKnown) return null;
  return [...names.keys()].find((id) => id !== page.me) ?? null;
}

/** @param {Page} page */
function updateCallButton(page) {
  const { client, call } = page;
  const b = /** @type {HTMLButtonElement} */ ($('call'));
  const who = callee(page);
  b.disabled = !(client.isConnected && client.version === 'v2' && who != null && !call);
  if (call) b.textContent = `📞 In a call with ${call.peerName}`;
  else b.textContent = who != null ? `📞 Call ${nameOf(who)}` : '📞 Call';
}

/**
 * Shows a new call (declines it while another is on screen).
 * @param {Page} page
 * @param {import('./chatgate.js').CallSession} s
 */
function trackCall(page, s) {
  if (page.call && page.call !== s) {
    s.decline(); // one call at a time
    return;
  }
  page.call = s;
  const stateEl = $('call-state');
  const show = (/** @type {string} */ st) => {
    stateEl.textContent = st;
    stateEl.dataset.state = st;
    $('incoming').hidden = !(s.incoming && st === 'ringing');
    $('hangup').hidden = st === 'ended' || (s.incoming && st === 'ringing');
    $('videos').hidden = st === 'ended';
    if (st === 'ended') {
      if (s.endReason) flash(`Call ended: ${s.endReason}`);
      page.call = null;
      /** @type {HTMLVideoElement} */ ($('remote-video')).srcObject = null;
      /** @type {HTMLVideoElement} */ ($('local-video')).srcObject = null;
    }
    updateCallButton(page);
  };
  $('incoming-text').textContent = `${s.peerName} is calling…`;
  s.on('state', show);
  s.on('localstream', (st) => (/** @type {HTMLVideoElement} */ ($('local-video')).srcObject = st));
  s.on('remotestream', (st) => (/** @type {HTMLVideoElement} */ ($('remote-video')).srcObject = st));
  show(s.state);
}

/** @param {string} text */
function flash(text) {
  const el = document.createElement('div');
  el.className = 'flash';
  el.setAttribute('role', 'status');
  el.textContent = text;
  document.body.append(el);
  setTimeout(() => el.remove(), 4000);
}
