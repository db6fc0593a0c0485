import { io } from 'socket.io-client';

// eslint-disable-next-line @typescript-eslint/no-explicit-any
export type SocketListener = (...args: any[]) => void;

/**
 * The part of a socket.io-client `Socket` the dashboard uses. Tests inject a
 * fake implementing just this.
 */
export interface LlamaSocket {
  /** Whether the socket is connected to the server right now. */
  readonly connected: boolean;
  /**
   * socket.io: whether the socket will try to reconnect by itself. False
   * after a manual disconnect or a rejected handshake.
   */
  readonly active?: boolean;
  on(event: string, listener: SocketListener): unknown;
  off(event: string, listener?: SocketListener): unknown;
  emit(event: string, ...args: unknown[]): unknown;
  connect(): unknown;
  disconnect(): unknown;
}

export type SocketFactory = (url?: string) => LlamaSocket;

/**
 * A socket.io-client socket to llamaherd: same origin unless `url` is given,
 * not connected yet (the owner calls `connect()`), reconnecting forever with
 * a backoff capped at 5 s so the dashboard comes back when llamaherd restarts.
 */
export const createLlamaSocket: SocketFactory = (url?: string) => {
  const options = {
    autoConnect: false,
    reconnection: true,
    reconnectionAttempts: Infinity,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
    timeout: 10000,
  };
  return url ? io(url, options) : io(options);
};

/** The origin llamaherd is reached at, for messages. */
export function llamaherdOrigin(url?: string): string {
  if (url) {
    try {
      return new URL(url, window.location.href).origin;
    } catch {
      return url;
    }
  }
  return window.location.origin;
}
