// idle_soak.js: hold SOCKETS idle authenticated sockets for HOLD; every
// socket must receive the {"type":"ping"} heartbeat (HOLD / PING_INTERVAL
// of them) and none may drop. Start the gateway with a short
// --ping-interval (e.g. 5s) and pass the same value as PING_INTERVAL.
//
// Environment: PLAN, URL, SOCKETS (default: one per plan member), SOCKETS_PER_VU
// (100), HOLD (30s), PING_INTERVAL (the gateway's --ping-interval, 5s),
// P95_MS (handshake latency bound, 3000: opening thousands of sockets at
// once queues them in k6 itself). Socket i uses plan member i mod members:
// keep SOCKETS / members below --max-conns-per-user (32).
import { WebSocket } from 'k6/experimental/websockets';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import { baseUrl, chatUrl, closeCode, envNumber, envSeconds, seats } from './lib.js';

const all = seats();
const BASE = baseUrl();
const SOCKETS = envNumber('SOCKETS', all.length);
const PER_VU = envNumber('SOCKETS_PER_VU', 100);
const HOLD = envSeconds('HOLD', '30s');
const PING_INTERVAL = envSeconds('PING_INTERVAL', '5s');
const EXPECTED_PINGS = Math.max(0, Math.floor(HOLD / PING_INTERVAL - 0.1));
const P95_MS = envNumber('P95_MS', 3000);
const VUS = Math.ceil(SOCKETS / PER_VU);

export const options = {
  scenarios: {
    soak: {
      executor: 'per-vu-iterations',
      vus: VUS,
      iterations: 1,
      maxDuration: `${Math.ceil(HOLD + 120)}s`,
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    soak_admitted: [`count>=${SOCKETS}`],
    soak_dropped: ['count<1'],
    soak_short_of_pings: ['count<1'],
    soak_handshake_latency: [`p(95)<${P95_MS}`],
  },
};

const admitted = new Counter('soak_admitted');
const pings = new Counter('soak_pings');
const dropped = new Counter('soak_dropped');
const short = new Counter('soak_short_of_pings');
const handshake = new Trend('soak_handshake_latency', true);

export function setup() {
  console.log(`idle_soak.js: ${SOCKETS} sockets on ${VUS} VUs, hold ${HOLD} s, expecting >= ${EXPECTED_PINGS} pings each`);
}

export default function () {
  const first = (exec.vu.idInTest - 1) * PER_VU;
  for (let i = first; i < Math.min(first + PER_VU, SOCKETS); i++) idle(all[i % all.length]);
}

function idle(seat) {
  const t0 = Date.now();
  const ws = new WebSocket(chatUrl(BASE, seat.conv, seat.token));
  const st = { admitted: false, done: false, pings: 0, timer: null };
  const finish = () => {
    if (st.done) return;
    st.done = true;
    check(st, { [`received >= ${EXPECTED_PINGS} pings`]: (s) => s.pings >= EXPECTED_PINGS });
    if (st.pings < EXPECTED_PINGS) short.add(1);
    ws.close();
  };
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (!st.admitted) {
      st.admitted = check(msg, { connection_established: (m) => m.type === 'connection_established' });
      if (st.admitted) {
        admitted.add(1);
        handshake.add(Date.now() - t0);
        st.timer = setTimeout(finish, HOLD * 1000);
      }
      return;
    }
    if (msg.type === 'ping') {
      st.pings++;
      pings.add(1);
    }
  };
  ws.onerror = (e) => {
    if (st.done) return;
    st.done = true;
    if (st.timer) clearTimeout(st.timer);
    check(null, { 'socket stayed open': () => false });
    dropped.add(1, { code: String(closeCode(e)) });
  };
}
