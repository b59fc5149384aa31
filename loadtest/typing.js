// typing.js: TYPISTS per conversation send typing events at an open-loop
// total RATE; every other user's socket must receive each of them, and no
// typist may receive its own. At the end each typist sends a chat_message
// announcing how many it sent (it passes the store, so it arrives after
// them), which is how receivers count loss.
//
// One VU per conversation. Environment: PLAN, URL, RATE (typing events/s over
// all typists, default 50), TYPISTS (per conversation, default 1), DURATION
// (10s), CONNECT_WAIT (3s), DRAIN (5s), CONVERSATIONS / MEMBERS.
// The gateway's per-user typing limit (--typing-rate 5, --typing-burst 10)
// must allow RATE / (conversations x TYPISTS); see README.md.
import { WebSocket } from 'k6/experimental/websockets';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter } from 'k6/metrics';
import { baseUrl, chatUrl, closeCode, conversations, envNumber, envSeconds } from './lib.js';

const convs = conversations();
const BASE = baseUrl();
const RATE = envNumber('RATE', 50);
const TYPISTS = envNumber('TYPISTS', 1);
const DURATION = envSeconds('DURATION', '10s');
const CONNECT_WAIT = envSeconds('CONNECT_WAIT', '3s');
const DRAIN = envSeconds('DRAIN', '5s');

const typistsOf = (conv) => Math.min(TYPISTS, conv.members.length);
let typistCount = 0;
for (let i = 0; i < convs.length; i++) typistCount += typistsOf(convs[i]);
const INTERVAL = (1000 * typistCount) / RATE;

export const options = {
  scenarios: {
    typing: {
      executor: 'per-vu-iterations',
      vus: convs.length,
      iterations: 1,
      maxDuration: `${Math.ceil(CONNECT_WAIT + DURATION + DRAIN + 30)}s`,
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    typing_received: ['count>0'],
    typing_lost: ['count<1'],
    typing_self: ['count<1'],
    typing_missing_end: ['count<1'],
    typing_errors: ['count<1'],
  },
};

const sent = new Counter('typing_sent');
const received = new Counter('typing_received');
const lost = new Counter('typing_lost');
const self = new Counter('typing_self');
const missingEnd = new Counter('typing_missing_end');
const errors = new Counter('typing_errors');

export function setup() {
  console.log(`typing.js: ${convs.length} conversations, ${typistCount} typists, ${RATE} events/s, ${DURATION} s`);
  if (RATE / typistCount > 5) console.warn('more than 5 typing events/s per typist: raise --typing-rate / --typing-burst');
}

export default function () {
  const vu = exec.vu.idInTest - 1;
  const conv = convs[vu];
  const start = exec.scenario.startTime + CONNECT_WAIT * 1000;
  const times = { start, stop: start + DURATION * 1000, deadline: start + (DURATION + DRAIN) * 1000 };
  const typists = conv.members.slice(0, typistsOf(conv)).map((m) => m.user_id);
  conv.members.forEach((m, j) => member(conv, m, j, typists, vu * TYPISTS + j, times));
}

function member(conv, m, j, typists, rank, times) {
  const ws = new WebSocket(chatUrl(BASE, conv.id, m.token));
  const others = typists.filter((u) => u !== m.user_id);
  const isTypist = j < typists.length;
  const st = { userId: m.user_id, admitted: false, done: false, endSent: false, counts: {}, ends: {}, timers: [] };
  const finish = () => {
    if (st.done) return;
    st.done = true;
    st.timers.forEach((t) => clearTimeout(t));
    let gone = 0;
    let missing = 0;
    for (const u of others) {
      if (st.ends[u] === undefined) missing++;
      else gone += Math.max(0, st.ends[u] - (st.counts[u] || 0));
    }
    lost.add(gone);
    missingEnd.add(missing);
    check(null, { 'every typist announced its count': () => missing === 0 });
    ws.close();
  };
  // Done when every other typist's count arrived and, for a typist, its own was sent.
  st.maybeFinish = () => {
    if (others.every((u) => st.ends[u] !== undefined) && (!isTypist || st.endSent)) finish();
  };
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (!st.admitted) {
      st.admitted = check(msg, { connection_established: (x) => x.type === 'connection_established' });
      if (st.admitted && isTypist) st.timers.push(setTimeout(() => typist(ws, st, rank, times), Math.max(0, times.start - Date.now())));
      return;
    }
    if (msg.type === 'typing') {
      if (msg.user_id === m.user_id) self.add(1);
      st.counts[msg.user_id] = (st.counts[msg.user_id] || 0) + 1;
      received.add(1);
    } else if (msg.type === 'new_message') {
      const parts = msg.message.content.split(':');
      if (parts[0] === 'k6typing-end') {
        st.ends[Number(parts[1])] = Number(parts[2]);
        st.maybeFinish();
      }
    } else if (msg.type === 'error') {
      errors.add(1, { message: msg.message });
    }
  };
  ws.onerror = (e) => {
    if (st.done) return;
    check(null, { 'socket stayed open': () => false });
    errors.add(1, { message: `socket error or close ${closeCode(e)}` });
    finish();
  };
  st.timers.push(setTimeout(finish, Math.max(0, times.deadline - Date.now())));
}

function typist(ws, st, rank, times) {
  const first = times.start + (INTERVAL * (rank % typistCount)) / typistCount;
  const total = first < times.stop ? Math.ceil((times.stop - first) / INTERVAL) : 0;
  let n = 0;
  const me = st;
  const tick = () => {
    if (me.done) return;
    const now = Date.now();
    const due = now < first ? 0 : Math.min(total, Math.floor((now - first) / INTERVAL) + 1);
    for (; n < due; n++) {
      ws.send(JSON.stringify({ type: 'typing', is_typing: n % 2 === 0 }));
      sent.add(1);
    }
    if (n >= total) {
      ws.send(JSON.stringify({ type: 'chat_message', content: `k6typing-end:${me.userId}:${total}` }));
      me.endSent = true;
      me.maybeFinish();
      return;
    }
    me.timers.push(setTimeout(tick, Math.max(1, Math.min(INTERVAL, 50))));
  };
  tick();
}
