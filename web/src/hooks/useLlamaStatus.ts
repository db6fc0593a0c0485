import { useCallback, useEffect, useRef, useState } from 'react';
import { createLlamaSocket, type LlamaSocket, type SocketFactory } from '../lib/socket';
import { localStartTime, normalizeStatus, parseStatusPayload } from '../lib/status';
import {
  DEFAULT_MAX_RETRIES,
  LLAMA_STATUS_EVENT,
  REQUEST_LLAMA_STATUS,
  type LlamaExit,
  type LlamaModel,
  type LlamaServiceStatus,
  type LlamaStatus,
} from '../types/llama';

/** `connecting` until the first connect or failure, then `connected` / `disconnected`. */
export type ConnectionState = 'connecting' | 'connected' | 'disconnected';

export interface UseLlamaStatusOptions {
  /**
   * A socket owned by the caller (shared with other hooks): this hook only adds
   * and removes its listeners; the caller connects and disconnects it.
   */
  socket?: LlamaSocket;
  /** Builds the socket this hook owns (connects it on mount, disconnects on unmount). */
  socketFactory?: SocketFactory;
  /** llamaherd's URL for the owned socket; same origin by default. */
  url?: string;
}

export interface UseLlamaStatusResult {
  status: LlamaServiceStatus;
  models: LlamaModel[];
  lastError: string | null;
  retries: number;
  maxRetries: number;
  /** Seconds; ticks every second while `ready`. */
  uptime: number;
  startedAt: string | null;
  adopted: boolean;
  pid: number | null;
  nextRetryAt: string | null;
  /** Restarts so far, when the server sends it. */
  restarts: number | null;
  lastExit: LlamaExit | null;
  /** True until the first status arrives. */
  isLoading: boolean;
  /** Whether the socket to llamaherd is up. */
  connected: boolean;
  connection: ConnectionState;
  /** The last connection error's message, cleared on connect. */
  connectionError: string | null;
  /** Local time (ms) the last status arrived, or null. */
  updatedAt: number | null;
  /** Ask the server for the status again. */
  refresh: () => void;
  /** Take a status from elsewhere (e.g. a control action's response). */
  applyStatus: (data: LlamaStatus) => void;
}

interface Snapshot {
  data: LlamaStatus;
  receivedAt: number;
  localStart: number | null;
}

const SERVER_KICK_RECONNECT_MS = 1000;
const REJECTED_RECONNECT_MS = 2000;

function snapshotOf(data: LlamaStatus, timestamp: number | null): Snapshot {
  const receivedAt = Date.now();
  return { data, receivedAt, localStart: localStartTime(data, timestamp, receivedAt) };
}

/**
 * Live llama-server status from llamaherd over Socket.IO.
 *
 * Requests the status on every (re)connect, follows `llamaStatus` events,
 * reconnects when llamaherd restarts, and ticks the uptime locally once a
 * second while llama-server is ready.
 */
export function useLlamaStatus(options: UseLlamaStatusOptions = {}): UseLlamaStatusResult {
  const { socket: sharedSocket, url } = options;
  // The factory may be an inline lambda: read it once per socket, not on every render.
  const factoryRef = useRef(options.socketFactory);
  factoryRef.current = options.socketFactory;

  const [snapshot, setSnapshot] = useState<Snapshot | null>(null);
  const [connection, setConnection] = useState<ConnectionState>(() =>
    sharedSocket?.connected ? 'connected' : 'connecting',
  );
  const [connectionError, setConnectionError] = useState<string | null>(null);
  const [now, setNow] = useState(() => Date.now());
  const socketRef = useRef<LlamaSocket | null>(null);

  useEffect(() => {
    const owned = !sharedSocket;
    const socket: LlamaSocket =
      sharedSocket ?? (factoryRef.current ?? createLlamaSocket)(url);
    socketRef.current = socket;
    let retryTimer: ReturnType<typeof setTimeout> | undefined;
    const scheduleConnect = (ms: number) => {
      clearTimeout(retryTimer);
      retryTimer = setTimeout(() => {
        if (!socket.connected) socket.connect();
      }, ms);
    };

    const onStatus = (payload: unknown) => {
      const parsed = parseStatusPayload(payload);
      if (parsed) setSnapshot(snapshotOf(parsed.data, parsed.timestamp));
    };
    // Fires on the first connect and after every reconnection.
    const onConnect = () => {
      clearTimeout(retryTimer);
      setConnection('connected');
      setConnectionError(null);
      socket.emit(REQUEST_LLAMA_STATUS);
    };
    const onDisconnect = (reason?: unknown) => {
      setConnection('disconnected');
      // socket.io does not reconnect by itself after the server closed the
      // socket on purpose (e.g. llamaherd shutting down cleanly): do it here.
      if (reason === 'io server disconnect') scheduleConnect(SERVER_KICK_RECONNECT_MS);
    };
    const onConnectError = (err?: unknown) => {
      setConnection('disconnected');
      setConnectionError(err instanceof Error ? err.message : err ? String(err) : 'connect error');
      // A rejected handshake leaves the socket inactive; transport errors are retried by socket.io.
      if (socket.active === false) scheduleConnect(REJECTED_RECONNECT_MS);
    };

    socket.on(LLAMA_STATUS_EVENT, onStatus);
    socket.on('connect', onConnect);
    socket.on('disconnect', onDisconnect);
    socket.on('connect_error', onConnectError);

    if (socket.connected) onConnect();
    else if (owned) socket.connect();

    return () => {
      clearTimeout(retryTimer);
      socket.off(LLAMA_STATUS_EVENT, onStatus);
      socket.off('connect', onConnect);
      socket.off('disconnect', onDisconnect);
      socket.off('connect_error', onConnectError);
      if (owned) socket.disconnect();
      if (socketRef.current === socket) socketRef.current = null;
    };
  }, [sharedSocket, url]);

  const data = snapshot?.data;
  const ticking = data?.status === 'ready' && snapshot?.localStart != null;

  useEffect(() => {
    if (!ticking) return undefined;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(id);
  }, [ticking, snapshot]);

  const refresh = useCallback(() => {
    const socket = socketRef.current;
    if (socket?.connected) socket.emit(REQUEST_LLAMA_STATUS);
  }, []);

  const applyStatus = useCallback((raw: LlamaStatus) => {
    const normalized = normalizeStatus(raw);
    if (normalized) setSnapshot(snapshotOf(normalized, null));
  }, []);

  let uptime = data?.uptime ?? 0;
  if (ticking && snapshot?.localStart != null) {
    const at = Math.max(now, snapshot.receivedAt);
    uptime = Math.max(0, Math.floor((at - snapshot.localStart) / 1000));
  }

  return {
    status: data?.status ?? 'initial',
    models: data?.models ?? EMPTY_MODELS,
    lastError: data?.lastError ?? null,
    retries: data?.retries ?? 0,
    maxRetries: data?.maxRetries ?? DEFAULT_MAX_RETRIES,
    uptime,
    startedAt: data?.startedAt ?? null,
    adopted: data?.adopted ?? false,
    pid: data?.pid ?? null,
    nextRetryAt: data?.nextRetryAt ?? null,
    restarts: data?.restarts ?? null,
    lastExit: data?.lastExit ?? null,
    isLoading: snapshot === null,
    connected: connection === 'connected',
    connection,
    connectionError,
    updatedAt: snapshot?.receivedAt ?? null,
    refresh,
    applyStatus,
  };
}

const EMPTY_MODELS: LlamaModel[] = [];
