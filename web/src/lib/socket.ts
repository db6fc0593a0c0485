import { io } from 'socket.io-client';
import { apiKeyStore, type ApiKeyStore } from './apiKey';

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

/** The Socket.IO handshake's `auth` payload: `{token: KEY}`, or nothing without a key. */
export function socketAuth(key: string | null): { token?: string } {
  return key ? { token: key } : {};
}

/**
 * A socket.io-client socket to llamaherd: same origin unless `url` is given,
 * not connected yet (the owner calls `connect()`), reconnecting forever with
 * a backoff capped at 5 s so the dashboard comes back when llamaherd restarts.
 * Each handshake carries the key `keys` holds at that moment (`auth: {token: KEY}`):
 * socket.io calls the `auth` function again on every (re)connection.
 */
export function createLlamaSocket(url?: string, keys: ApiKeyStore = apiKeyStore): LlamaSocket {
  const options = {
    autoConnect: false,
    reconnection: true,
    reconnectionAttempts: Infinity,
    reconnectionDelay: 1000,
    reconnectionDelayMax: 5000,
    timeout: 10000,
    auth: (send: (data: object) => void) => send(socketAuth(keys.key)),
  };
  return url ? io(url, options) : io(options);
}

/** After the server closed the socket on purpose (llamaherd shutting down cleanly). */
export const SERVER_KICK_RECONNECT_MS = 1000;
/** After the server refused the handshake. */
export const REJECTED_RECONNECT_MS = 2000;

/**
 * socket.io reconnects by itself after a lost connection, but not after the server closed
 * the socket on purpose (`io server disconnect`, as llamaherd does when it shuts down
 * cleanly) nor after a refused handshake (the socket is left inactive). The dashboard must
 * come back when llamaherd does, so its owner calls this once: it connects again after a
 * pause in those two cases, and never after the owner's own `disconnect()`. A refusal that
 * `isFinal` accepts (a refused API key: the same key would be refused again) is left alone.
 * Returns what undoes it (removes the listeners, cancels a pending connect).
 *
 * Only the socket's owner may call this: a page with two reconnecting listeners would
 * connect twice.
 */
export function keepReconnecting(socket: LlamaSocket, isFinal: (err: unknown) => boolean = () => false): () => void {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const connectIn = (ms: number) => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      if (!socket.connected) socket.connect();
    }, ms);
  };
  const onConnect = () => clearTimeout(timer);
  const onDisconnect = (reason?: unknown) => {
    if (reason === 'io server disconnect') connectIn(SERVER_KICK_RECONNECT_MS);
  };
  const onConnectError = (err?: unknown) => {
    if (socket.active === false && !isFinal(err)) connectIn(REJECTED_RECONNECT_MS);
  };
  socket.on('connect', onConnect);
  socket.on('disconnect', onDisconnect);
  socket.on('connect_error', onConnectError);
  return () => {
    clearTimeout(timer);
    socket.off('connect', onConnect);
    socket.off('disconnect', onDisconnect);
    socket.off('connect_error', onConnectError);
  };
}

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
