// chat.js: C conversations x M members, K senders per conversation sending
// chat_message at an open-loop total RATE. Every member checks
// connection_established, parses new_message, records the end-to-end
// latency from the send time embedded in the content, checks per-sender
// order, and counts loss against the count each sender announces at the end.
//
// One VU per conversation (it holds all M member sockets). Environment:
//   PLAN (plan.json from `chatgate-bench prepare`), URL (default: the plan's
//   url_base), RATE (messages/s over all senders, default 50), SENDERS
//   (per conversation, default 1), DURATION (10s), CONNECT_WAIT (time to
//   connect before sending starts, 3s), DRAIN (5s), P95_MS (250),
//   CONVERSATIONS / MEMBERS (use only the first N / M of the plan).
// The gateway must allow RATE / (conversations x SENDERS) chat messages per
// user per second (--chat-rate, --chat-burst) and every VU's handshakes from
// one IP (--handshakes-per-ip, --handshake-ip-burst): see README.md.
import { WebSocket } from 'k6/experimental/websockets';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import { baseUrl, chatUrl, closeCode, conversations, envNumber, envSeconds } from './lib.js';

const convs = conversations();
const BASE = baseUrl();
const RATE = envNumber('RATE', 50);
const SENDERS = envNumber('SENDERS', 1);
const DURATION = envSeconds('DURATION', '10s');
const CONNECT_WAIT = envSeconds('CONNECT_WAIT', '3s');
const DRAIN = envSeconds('DRAIN', '5s');
const P95_MS = envNumber('P95_MS', 250);

const sendersOf = (conv) => Math.min(SENDERS, conv.members.length);
let senderCount = 0;
for (let i = 0; i < convs.length; i++) senderCount += sendersOf(convs[i]);
/** Milliseconds between two messages of one sender. */
const INTERVAL = (1000 * senderCount) / RATE;

export const options = {
  scenarios: {
    chat: {
      executor: 'per-vu-iterations',
      vus: convs.length,
      iterations: 1,
      maxDuration: `${Math.ceil(CONNECT_WAIT + DURATION + DRAIN + 30)}s`,
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    chat_e2e_latency: [`p(95)<${P95_MS}`],
    chat_delivered: ['count>0'],
    chat_lost: ['count<1'],
    chat_missing_end: ['count<1'],
    chat_out_of_order: ['count<1'],
    chat_errors: ['count<1'],
  },
};

const sent = new Counter('chat_sent');
const delivered = new Counter('chat_delivered');
const committed = new Counter('chat_committed');
const lost = new Counter('chat_lost');
const missingEnd = new Counter('chat_missing_end');
const outOfOrder = new Counter('chat_out_of_order');
const errors = new Counter('chat_errors');
const latency = new Trend('chat_e2e_latency', true);

export function setup() {
  const perSender = RATE / senderCount;
  console.log(
    `chat.js: ${convs.length} conversations, ${senderCount} senders, ${RATE} msg/s ` +
      `(${perSender.toFixed(2)} per sender, one every ${INTERVAL.toFixed(1)} ms), ${DURATION} s`,
  );
  if (perSender > 10) {
    console.warn('more than 10 msg/s per sender: start the gateway with a higher --chat-rate and --chat-burst');
  }
}

export default function () {
  const vu = exec.vu.idInTest - 1;
  const conv = convs[vu];
  const start = exec.scenario.startTime + CONNECT_WAIT * 1000;
  const times = { start, stop: start + DURATION * 1000, deadline: start + (DURATION + DRAIN) * 1000 };
  const k = sendersOf(conv);
  const rankBase = vu * SENDERS;
  conv.members.forEach((m, j) => member(conv, m, j, k, rankBase + j, times));
}

/** One member socket: `j` is its index, the first `k` members send. */
function member(conv, m, j, k, rank, times) {
  const ws = new WebSocket(chatUrl(BASE, conv.id, m.token));
  const st = { admitted: false, done: false, received: new Array(k).fill(0), next: new Array(k).fill(0), ends: new Array(k).fill(null), timers: [] };

  const finish = () => {
    if (st.done) return;
    st.done = true;
    st.timers.forEach((t) => clearTimeout(t));
    let gone = 0;
    let missing = 0;
    for (let s = 0; s < k; s++) {
      if (st.ends[s] === null) missing++;
      else gone += Math.max(0, st.ends[s] - st.received[s]);
    }
    lost.add(gone);
    missingEnd.add(missing);
    check(null, { 'every sender announced its count': () => missing === 0 });
    ws.close();
  };

  const onNew = (content, now) => {
    const parts = content.split(':');
    const s = Number(parts[1]);
    if (parts[0] === 'k6' && s < k) {
      const seq = Number(parts[2]);
      latency.add(now - Number(parts[3]));
      delivered.add(1);
      st.received[s]++;
      if (s === j) committed.add(1);
      if (seq < st.next[s]) outOfOrder.add(1);
      else st.next[s] = seq + 1;
    } else if (parts[0] === 'k6end' && s < k) {
      st.ends[s] = Number(parts[2]);
      if (st.ends.every((e) => e !== null)) finish();
    }
  };

  ws.onmessage = (e) => {
    const now = Date.now();
    let msg;
    try {
      msg = JSON.parse(e.data);
    } catch (_) {
      errors.add(1, { message: 'invalid JSON from the server' });
      return;
    }
    if (!st.admitted) {
      st.admitted = check(msg, { connection_established: (x) => x.type === 'connection_established' });
      check(null, { 'admitted before sending started': () => now <= times.start });
      if (st.admitted && j < k) st.timers.push(setTimeout(() => sender(ws, st, j, rank, times), Math.max(0, times.start - now)));
      return;
    }
    if (msg.type === 'new_message') onNew(msg.message.content, now);
    else if (msg.type === 'error') errors.add(1, { message: msg.message });
  };
  ws.onerror = (e) => {
    if (st.done) return;
    check(null, { 'socket stayed open': () => false });
    errors.add(1, { message: `socket error or close ${closeCode(e)}` });
    finish();
  };
  st.timers.push(setTimeout(finish, Math.max(0, times.deadline - Date.now())));
}

/** Sender number `s`: open loop, every INTERVAL ms from its staggered start, then its count. */
function sender(ws, st, s, rank, times) {
  const first = times.start + (INTERVAL * (rank % senderCount)) / senderCount;
  const total = first < times.stop ? Math.ceil((times.stop - first) / INTERVAL) : 0;
  let seq = 0;
  const tick = () => {
    if (st.done) return;
    const now = Date.now();
    const due = now < first ? 0 : Math.min(total, Math.floor((now - first) / INTERVAL) + 1);
    for (; seq < due; seq++) {
      ws.send(JSON.stringify({ type: 'chat_message', content: `k6:${s}:${seq}:${Date.now()}` }));
      sent.add(1);
    }
    if (seq >= total) {
      ws.send(JSON.stringify({ type: 'chat_message', content: `k6end:${s}:${total}` }));
      return;
    }
    st.timers.push(setTimeout(tick, Math.max(1, Math.min(INTERVAL, 50))));
  };
  tick();
}
