// @ts-check
/**
 * emitter.js: the tiny event emitter under the chatgate client and its call
 * helper (`ChatGate`, `CallSession` and `CallManager` extend it).
 * Dependency-free; `chatgate.js` re-exports it.
 */

/** A tiny event emitter: `on`, `off`, `emit`. */
export class Emitter {
  constructor() {
    /** @type {Map<string, Set<(data: any) => void>>} */
    this._listeners = new Map();
  }

  /**
   * @param {string} event
   * @param {(data: any) => void} cb
   * @returns {() => void} a function that removes the listener
   */
  on(event, cb) {
    let set = this._listeners.get(event);
    if (!set) this._listeners.set(event, (set = new Set()));
    set.add(cb);
    return () => this.off(event, cb);
  }

  /**
   * @param {string} event
   * @param {(data: any) => void} cb
   */
  off(event, cb) {
    this._listeners.get(event)?.delete(cb);
  }

  /**
   * @param {string} event
   * @param {any} [data]
   */
  emit(event, data) {
    for (const cb of [...(this._listeners.get(event) ?? [])]) {
      try {
        cb(data);
      } catch (e) {
        // A listener's bug must not break the socket loop.
        console.error(`chatgate: a '${event}' listener threw`, e);
      }
    }
  }
}
