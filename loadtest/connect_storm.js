// connect_storm.js: handshakes at a constant arrival RATE. Each iteration
// connects one plan member's socket, waits for connection_established,
// records the handshake latency (open -> connection_established: TCP
// connect, upgrade, JWT and membership check) and closes.
//
// Environment: PLAN, URL, RATE (handshakes/s, default 50), DURATION (10s),
// VUS (pre-allocated, default 50), MAX_VUS (500), TIMEOUT (5s per attempt),
// P95_MS (500). All VUs share one source IP: start the gateway with
// --handshakes-per-ip and --handshake-ip-burst above RATE (defaults 50 / 100).
import { WebSocket } from 'k6/experimental/websockets';
import { check } from 'k6';
import exec from 'k6/execution';
import { Counter, Trend } from 'k6/metrics';
import { baseUrl, chatUrl, closeCode, envNumber, envSeconds, seats } from './lib.js';

const all = seats();
const BASE = baseUrl();
const RATE = envNumber('RATE', 50);
const DURATION = envSeconds('DURATION', '10s');
const TIMEOUT = envSeconds('TIMEOUT', '5s');
const P95_MS = envNumber('P95_MS', 500);

export const options = {
  scenarios: {
    storm: {
      executor: 'constant-arrival-rate',
      rate: RATE,
      timeUnit: '1s',
      duration: `${DURATION}s`,
      preAllocatedVUs: envNumber('VUS', 50),
      maxVUs: envNumber('MAX_VUS', 500),
    },
  },
  thresholds: {
    checks: ['rate>0.99'],
    handshake_latency: [`p(95)<${P95_MS}`],
    handshakes_ok: ['count>0'],
  },
};

const latency = new Trend('handshake_latency', true);
const ok = new Counter('handshakes_ok');
const failed = new Counter('handshakes_failed');

export default function () {
  const seat = all[exec.scenario.iterationInTest % all.length];
  const t0 = Date.now();
  const ws = new WebSocket(chatUrl(BASE, seat.conv, seat.token));
  let settled = false;
  const settle = (good, reason) => {
    if (settled) return;
    settled = true;
    clearTimeout(timer);
    check(null, { 'admitted (connection_established)': () => good });
    if (good) {
      latency.add(Date.now() - t0);
      ok.add(1);
    } else {
      failed.add(1, { reason });
    }
    ws.close();
  };
  const timer = setTimeout(() => settle(false, 'timeout'), TIMEOUT * 1000);
  ws.onmessage = (e) => {
    let type;
    try {
      type = JSON.parse(e.data).type;
    } catch (_) {
      type = 'invalid JSON';
    }
    settle(type === 'connection_established', type);
  };
  ws.onerror = (e) => settle(false, `close ${closeCode(e)}`);
}
