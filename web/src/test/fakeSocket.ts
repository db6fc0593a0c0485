import type { LlamaSocket, SocketListener } from '../lib/socket';

/**
 * An in-memory stand-in for a socket.io-client Socket. `on/off/emit/connect/
 * disconnect` are what the code under test calls; `serverConnect`,
 * `serverDisconnect`, `serverEmit` and `connectError` play the server's side.
 */
export class FakeSocket implements LlamaSocket {
  connected = false;
  active = true;
  readonly listeners = new Map<string, Set<SocketListener>>();
  /** Every event the client emitted, with its arguments. */
  readonly emitted: Array<{ event: string; args: unknown[] }> = [];
  connectCalls = 0;
  disconnectCalls = 0;

  on(event: string, listener: SocketListener): this {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return this;
  }

  off(event: string, listener?: SocketListener): this {
    if (!listener) this.listeners.delete(event);
    else this.listeners.get(event)?.delete(listener);
    return this;
  }

  emit(event: string, ...args: unknown[]): this {
    this.emitted.push({ event, args });
    return this;
  }

  connect(): this {
    this.connectCalls += 1;
    this.active = true;
    return this;
  }

  disconnect(): this {
    this.disconnectCalls += 1;
    this.active = false;
    if (this.connected) {
      this.connected = false;
      this.fire('disconnect', 'io client disconnect');
    }
    return this;
  }

  // --- the server's side -------------------------------------------------

  fire(event: string, ...args: unknown[]): void {
    for (const fn of [...(this.listeners.get(event) ?? [])]) fn(...args);
  }

  serverConnect(): void {
    this.connected = true;
    this.fire('connect');
  }

  serverDisconnect(reason = 'transport close'): void {
    this.connected = false;
    this.fire('disconnect', reason);
  }

  connectError(message = 'xhr poll error'): void {
    this.connected = false;
    this.fire('connect_error', new Error(message));
  }

  serverEmit(event: string, payload: unknown): void {
    this.fire(event, payload);
  }

  listenerCount(event?: string): number {
    if (event) return this.listeners.get(event)?.size ?? 0;
    let n = 0;
    for (const set of this.listeners.values()) n += set.size;
    return n;
  }

  emitCount(event: string): number {
    return this.emitted.filter((e) => e.event === event).length;
  }
}
