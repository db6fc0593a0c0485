import { useCallback, useEffect, useState } from 'react';
import type { LlamaSocket } from '../lib/socket';
import { localStartTime, parseModelStatusPayload, parseStatusPayload } from '../lib/status';
import {
  DEFAULT_MAX_RETRIES,
  LLAMA_MODEL_STATUS_EVENT,
  LLAMA_STATUS_EVENT,
  REQUEST_LLAMA_MODEL_STATUS,
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
   * The page's socket (from {@link useLlamaSocket}). Its owner connects, reconnects and
   * disconnects it; this hook only listens, so any number of hooks can share it.
   */
  socket: LlamaSocket;
  /**
   * Whose server: a model's id (its `llamaModelStatus` events), or null / absent for the
   * primary model's (`llamaStatus`, the seed's).
   */
  model?: string | null;
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
  /** Ask the server for the status again. */
  refresh: () => void;
}

interface Snapshot {
  data: LlamaStatus;
  receivedAt: number;
  localStart: number | null;
}

function snapshotOf(data: LlamaStatus, timestamp: number | null): Snapshot {
  const receivedAt = Date.now();
  return { data, receivedAt, localStart: localStartTime(data, timestamp, receivedAt) };
}

/**
 * Live llama-server status from llamaherd over the page's socket: the primary model's, or
 * `model`'s.
 *
 * Requests the status on every (re)connect (and when `model` changes), follows `llamaStatus`
 * (or that model's `llamaModelStatus`) events, tells whether llamaherd is reachable, and ticks
 * the uptime locally once a second while llama-server is ready. It never connects or
 * disconnects the socket: that is its owner's job.
 */
export function useLlamaStatus({ socket, model = null }: UseLlamaStatusOptions): UseLlamaStatusResult {
  const [snapshot, setSnapshot] = useState<Snapshot | null>(null);
  // Another model's card must not show the last one's state while it loads.
  const [shown, setShown] = useState(model);
  if (shown !== model) {
    setShown(model);
    setSnapshot(null);
  }
  const [connection, setConnection] = useState<ConnectionState>(() =>
    socket.connected ? 'connected' : 'connecting',
  );
  const [connectionError, setConnectionError] = useState<string | null>(null);
  const [now, setNow] = useState(() => Date.now());

  useEffect(() => {
    const onStatus = (payload: unknown) => {
      if (model === null) {
        const parsed = parseStatusPayload(payload);
        if (parsed) setSnapshot(snapshotOf(parsed.data, parsed.timestamp));
        return;
      }
      // Every model's changes come to every page: keep this one's.
      const parsed = parseModelStatusPayload(payload);
      if (parsed && parsed.model === model) setSnapshot(snapshotOf(parsed.data, parsed.timestamp));
    };
    const event = model === null ? LLAMA_STATUS_EVENT : LLAMA_MODEL_STATUS_EVENT;
    const request = () => {
      if (model === null) socket.emit(REQUEST_LLAMA_STATUS);
      else socket.emit(REQUEST_LLAMA_MODEL_STATUS, { model });
    };
    // Fires on the first connect and after every reconnection.
    const onConnect = () => {
      setConnection('connected');
      setConnectionError(null);
      request();
    };
    const onDisconnect = () => setConnection('disconnected');
    const onConnectError = (err?: unknown) => {
      setConnection('disconnected');
      setConnectionError(err instanceof Error ? err.message : err ? String(err) : 'connect error');
    };

    socket.on(event, onStatus);
    socket.on('connect', onConnect);
    socket.on('disconnect', onDisconnect);
    socket.on('connect_error', onConnectError);

    if (socket.connected) onConnect();

    return () => {
      socket.off(event, onStatus);
      socket.off('connect', onConnect);
      socket.off('disconnect', onDisconnect);
      socket.off('connect_error', onConnectError);
    };
  }, [socket, model]);

  const data = snapshot?.data;
  const ticking = data?.status === 'ready' && snapshot?.localStart != null;

  useEffect(() => {
    if (!ticking) return undefined;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(id);
  }, [ticking, snapshot]);

  const refresh = useCallback(() => {
    if (!socket.connected) return;
    if (model === null) socket.emit(REQUEST_LLAMA_STATUS);
    else socket.emit(REQUEST_LLAMA_MODEL_STATUS, { model });
  }, [socket, model]);

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
    refresh,
  };
}

const EMPTY_MODELS: LlamaModel[] = [];
