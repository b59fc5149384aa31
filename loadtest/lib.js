// Helpers shared by the k6 scripts: the plan file, environment parameters,
// and the gateway's URL scheme. See README.md for how to run the scripts.
import { SharedArray } from 'k6/data';

/** A number from the environment, or `dflt`. */
export function envNumber(name, dflt) {
  const v = __ENV[name];
  if (v === undefined || v === '') return dflt;
  const n = Number(v);
  if (!Number.isFinite(n)) throw new Error(`${name}=${v} is not a number`);
  return n;
}

/** Seconds from "10s", "2m", "1h", "500ms" or a plain number of seconds. */
export function seconds(text) {
  const m = /^\s*([0-9.]+)\s*(ms|s|m|h)?\s*$/.exec(String(text));
  if (!m) throw new Error(`bad duration ${text}`);
  const scale = { ms: 0.001, s: 1, m: 60, h: 3600 }[m[2] || 's'];
  return Number(m[1]) * scale;
}

/** A duration from the environment, in seconds. */
export function envSeconds(name, dflt) {
  const v = __ENV[name];
  return seconds(v === undefined || v === '' ? dflt : v);
}

const PLAN = __ENV.PLAN || 'plan.json';

/**
 * The plan's conversations, parsed once and shared by every VU:
 * `[{id, members: [{user_id, token}]}]`, limited to the first
 * CONVERSATIONS conversations and MEMBERS members each when those are set.
 */
export function conversations() {
  const c = envNumber('CONVERSATIONS', 0);
  const m = envNumber('MEMBERS', 0);
  return new SharedArray('conversations', () =>
    JSON.parse(open(PLAN)).conversations
      .slice(0, c > 0 ? c : undefined)
      .map((conv) => ({ id: conv.id, members: conv.members.slice(0, m > 0 ? m : undefined) })),
  );
}

/**
 * Every plan member as a seat `{conv, user_id, token}`, in plan order
 * (shared by every VU).
 */
export function seats() {
  const c = envNumber('CONVERSATIONS', 0);
  const m = envNumber('MEMBERS', 0);
  return new SharedArray('seats', () => {
    const out = [];
    for (const conv of JSON.parse(open(PLAN)).conversations.slice(0, c > 0 ? c : undefined)) {
      for (const mem of conv.members.slice(0, m > 0 ? m : undefined)) {
        out.push({ conv: conv.id, user_id: mem.user_id, token: mem.token });
      }
    }
    return out;
  });
}

/** The gateway base URL: URL from the environment, else the plan's url_base. */
export function baseUrl() {
  const meta = new SharedArray('meta', () => [{ url_base: JSON.parse(open(PLAN)).url_base }]);
  return (__ENV.URL || meta[0].url_base).replace(/\/+$/, '');
}

/** The chat URL of conversation `conv` for `token`. */
export function chatUrl(base, conv, token) {
  return `${base}/ws/chat/${conv}/?token=${token}`;
}

/** The close code in a k6 websocket error ("websocket: close 4001"), or null. */
export function closeCode(errorEvent) {
  const m = /close (\d+)/.exec(String(errorEvent && errorEvent.error));
  return m ? Number(m[1]) : null;
}
