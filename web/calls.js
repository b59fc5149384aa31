// @ts-check
/**
 * calls.js: WebRTC calls over a chatgate client. {@link CallManager} runs the
 * offer / answer / candidate exchange of each {@link CallSession} over
 * `call_signal` frames (protocol v2). `chatgate.js` re-exports both, so
 * apps import them from there.
 */

import { Emitter } from './emitter.js';

/**
 * @typedef {import('./chatgate.js').ChatGate} ChatGate
 * @typedef {import('./chatgate.js').SignalKind} SignalKind
 */

/** A random call id of the allowed alphabet. */
function newCallId() {
  const abc = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789';
  let s = 'call_';
  for (let i = 0; i < 16; i++) s += abc[Math.floor(Math.random() * abc.length)];
  return s;
}

/**
 * One call between this user and another participant.
 *
 * Events: `state` (`ringing`, `connecting`, `connected`, `ended`),
 * `localstream`, `remotestream` (a MediaStream each).
 */
export class CallSession extends Emitter {
  /**
   * @param {CallManager} manager
   * @param {number} peerUserId
   * @param {string} callId
   * @param {boolean} incoming
   * @param {string} [peerName]
   */
  constructor(manager, peerUserId, callId, incoming, peerName) {
    super();
    this.manager = manager;
    this.peerUserId = peerUserId;
    this.peerName = peerName ?? `user ${peerUserId}`;
    this.callId = callId;
    this.incoming = incoming;
    /** @type {'ringing'|'connecting'|'connected'|'ended'} */
    this.state = 'ringing';
    /** @type {{audio: boolean, video: boolean}} */
    this.media = { audio: true, video: true };
    /** @type {any} */
    this.pc = null;
    /** @type {any} */
    this.localStream = null;
    /** @type {any} */
    this.remoteStream = null;
    /** The caller's offer, held until the callee accepts. @type {any} */
    this._offer = null;
    /** Candidates that came before the remote description. @type {any[]} */
    this._early = [];
    this._remoteSet = false;
    /** Wakes an `accept()` that came before the offer. @type {(() => void) | null} */
    this._offerArrived = null;
    /** Why the call ended, when the server refused it (`User not available`). @type {string | null} */
    this.endReason = null;
  }

  /** Whether the call ended (also while an await was pending). */
  _ended() {
    return this.state === 'ended';
  }

  /** @param {'ringing'|'connecting'|'connected'|'ended'} s */
  _setState(s) {
    if (this.state === s || this.state === 'ended') return;
    this.state = s;
    this.emit('state', s);
    if (s === 'ended') this._cleanup();
  }

  /** @param {SignalKind} kind @param {any} [payload] */
  _signal(kind, payload) {
    return this.manager.client.callSignal(this.peerUserId, this.callId, kind, payload);
  }

  async _peer() {
    const m = this.manager;
    const PC = m.options.RTCPeerConnection ?? /** @type {any} */ (globalThis).RTCPeerConnection;
    const pc = new PC({ iceServers: m.options.iceServers ?? [] });
    this.pc = pc;
    pc.onicecandidate = (/** @type {any} */ e) => {
      if (e.candidate) this._signal('candidate', e.candidate.toJSON ? e.candidate.toJSON() : e.candidate);
    };
    pc.ontrack = (/** @type {any} */ e) => {
      const stream = e.streams?.[0];
      if (stream && this.remoteStream !== stream) {
        this.remoteStream = stream;
        this.emit('remotestream', stream);
      }
    };
    pc.onconnectionstatechange = () => {
      const s = pc.connectionState;
      if (s === 'connected') this._setState('connected');
      else if (s === 'failed' || s === 'closed') this.hangup();
    };
    const devices = m.options.mediaDevices ?? /** @type {any} */ (globalThis).navigator?.mediaDevices;
    if (devices && (this.media.audio || this.media.video)) {
      try {
        this.localStream = await devices.getUserMedia(this.media);
      } catch {
        // No camera: try audio only, then receive only.
        try {
          this.localStream = await devices.getUserMedia({ audio: this.media.audio, video: false });
        } catch {
          this.localStream = null;
        }
      }
    }
    if (this._ended()) return pc;
    if (this.localStream) {
      this.emit('localstream', this.localStream);
      for (const t of this.localStream.getTracks()) pc.addTrack(t, this.localStream);
    } else {
      pc.addTransceiver('audio', { direction: 'recvonly' });
      if (this.media.video) pc.addTransceiver('video', { direction: 'recvonly' });
    }
    return pc;
  }

  /** Caller: ring, then send the offer; give up when nobody answers. */
  async _start() {
    if (!this._signal('ring', { media: this.media })) {
      this._setState('ended');
      return;
    }
    const ringFor = this.manager.options.ringTimeout ?? 45000;
    const timer = setTimeout(() => {
      if (this.state === 'ringing') {
        this.endReason = 'No answer';
        this.hangup();
      }
    }, ringFor);
    this.on('state', () => clearTimeout(timer));
    const pc = await this._peer();
    if (this._ended()) return;
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    this._signal('offer', { type: offer.type, sdp: offer.sdp });
  }

  /** Callee: answer the held offer. */
  async accept() {
    if (!this.incoming || this.state !== 'ringing') return;
    this._setState('connecting');
    const pc = await this._peer();
    if (this._ended()) return;
    if (!this._offer) {
      // The offer follows the ring; wait for it.
      await new Promise((resolve) => (this._offerArrived = () => resolve(undefined)));
      if (this._ended()) return;
    }
    await pc.setRemoteDescription(this._offer);
    await this._flushCandidates();
    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    this._signal('answer', { type: answer.type, sdp: answer.sdp });
  }

  /** Callee: refuse the call. */
  decline() {
    if (this.state === 'ended') return;
    this._signal('decline');
    this._setState('ended');
  }

  /** Either side: end the call. */
  hangup() {
    if (this.state === 'ended') return;
    this._signal('hangup');
    this._setState('ended');
  }

  async _flushCandidates() {
    this._remoteSet = true;
    for (const c of this._early.splice(0)) {
      try {
        await this.pc.addIceCandidate(c);
      } catch {
        /* a candidate of another generation */
      }
    }
  }

  /** @param {any} f a call_signal frame for this call */
  async _onSignal(f) {
    switch (f.kind) {
      case 'offer':
        this._offer = f.payload;
        this._offerArrived?.();
        return;
      case 'answer':
        if (!this.pc || this.incoming) return;
        this._setState('connecting');
        await this.pc.setRemoteDescription(f.payload);
        await this._flushCandidates();
        return;
      case 'candidate':
        if (!f.payload) return;
        if (this._remoteSet && this.pc) {
          try {
            await this.pc.addIceCandidate(f.payload);
          } catch {
            /* ignore */
          }
        } else {
          this._early.push(f.payload);
        }
        return;
      case 'hangup':
      case 'decline':
        this._setState('ended');
        return;
    }
  }

  _cleanup() {
    this._offerArrived?.();
    for (const t of this.localStream?.getTracks?.() ?? []) t.stop();
    try {
      this.pc?.close();
    } catch {
      /* closed */
    }
    this.manager._forget(this);
  }
}

/**
 * Runs calls over a {@link ChatGate} client. Events: `incoming` (a
 * {@link CallSession} that is ringing), `call` (any new session).
 */
export class CallManager extends Emitter {
  /**
   * @param {ChatGate} client
   * @param {{iceServers?: any[], RTCPeerConnection?: any, mediaDevices?: any, ringTimeout?: number}} [options]
   *   `ringTimeout`: ms an outgoing call rings before it hangs up (default 45000)
   */
  constructor(client, options = {}) {
    super();
    this.client = client;
    this.options = options;
    /** @type {Map<string, CallSession>} */
    this.sessions = new Map();
    client.on('call_signal', (f) => this._onSignal(f));
    // A ring nobody can take: the error names no call, so it ends the
    // outgoing call that is still ringing (there is one at a time per page).
    client.on('error', (f) => {
      if (f.message !== 'User not available' && f.message !== 'Invalid recipient') return;
      for (const s of [...this.sessions.values()]) {
        if (!s.incoming && s.state === 'ringing') {
          s.endReason = f.message;
          s._setState('ended');
        }
      }
    });
    client.on('disconnected', () => {
      for (const s of [...this.sessions.values()]) s._setState('ended');
    });
  }

  /**
   * Calls another participant (who must be online with a v2 client).
   * @param {number} userId
   * @param {{audio?: boolean, video?: boolean, name?: string}} [media]
   * @returns {CallSession}
   */
  call(userId, media = {}) {
    const s = new CallSession(this, userId, newCallId(), false, media.name);
    s.media = { audio: media.audio ?? true, video: media.video ?? true };
    this.sessions.set(s.callId, s);
    this.emit('call', s);
    s._start().catch(() => s.hangup());
    return s;
  }

  /** @param {CallSession} s */
  _forget(s) {
    if (this.sessions.get(s.callId) === s) this.sessions.delete(s.callId);
  }

  /** @param {any} f */
  _onSignal(f) {
    let s = this.sessions.get(f.call_id);
    if (!s && f.kind === 'ring') {
      s = new CallSession(this, f.from_user_id, f.call_id, true, f.from_username);
      const m = f.payload?.media;
      if (m) s.media = { audio: m.audio !== false, video: !!m.video };
      this.sessions.set(s.callId, s);
      this.emit('call', s);
      this.emit('incoming', s);
      return;
    }
    // Our own answer/decline/hangup echoed from another tab: that tab took the call.
    if (s && s.incoming && s.state === 'ringing' && f.from_user_id !== s.peerUserId) {
      s._setState('ended');
      return;
    }
    if (s) s._onSignal(f).catch(() => s?.hangup());
  }
}
