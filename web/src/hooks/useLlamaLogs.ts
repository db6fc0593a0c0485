import { useCallback, useEffect, useState } from 'react';
import { getLogs, type FetchLike } from '../api/client';
import { appendOverlapping, capLines } from '../lib/lines';
import type { LlamaSocket } from '../lib/socket';
import { logPayloadModel, parseLogPayload } from '../lib/status';
import { LLAMA_LOG_EVENT, LLAMA_LOG_SUBSCRIBE, LLAMA_LOG_UNSUBSCRIBE } from '../types/llama';

const DEFAULT_MAX_LOG_LINES = 1000;
const DEFAULT_TAIL_LINES = 200;

export interface UseLlamaLogsOptions {
  /** The shared socket (owned by the caller). */
  socket: LlamaSocket | null;
  /** Whose output: a model's id, or null / absent for the primary model's (the seed's). */
  model?: string | null;
  /** Lines kept in memory. */
  maxLines?: number;
  /** Lines of history fetched at start and after each reconnect. */
  tailLines?: number;
  fetchImpl?: FetchLike;
}

export interface UseLlamaLogsResult {
  lines: string[];
  /** True until the first tail fetch settles. */
  loading: boolean;
  /** The last tail fetch's error, if it failed. */
  error: string | null;
  /** Empty the view (new lines keep coming). */
  clear: () => void;
}

/**
 * llama-server's output: the tail from `GET /api/llama/logs` (or `/api/models/{model}/logs`),
 * then the live `llamaLog` lines (subscribed to with `subscribeLlamaLogs`, with `{model}` for a
 * model's), at most `maxLines`. After a reconnect the tail is fetched again and merged so
 * nothing said while away is lost. Another model starts from its own tail.
 */
export function useLlamaLogs({
  socket,
  model = null,
  maxLines = DEFAULT_MAX_LOG_LINES,
  tailLines = DEFAULT_TAIL_LINES,
  fetchImpl,
}: UseLlamaLogsOptions): UseLlamaLogsResult {
  const [lines, setLines] = useState<string[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);
  const [shown, setShown] = useState(model);
  if (shown !== model) {
    setShown(model);
    setLines([]);
    setLoading(true);
    setError(null);
  }

  useEffect(() => {
    if (!socket) return undefined;
    // With a model, the subscription names it; the seed's carries no argument.
    const subscription: unknown[] = model === null ? [] : [{ model }];
    let cancelled = false;
    let seq = 0;
    let buffering = false;
    let pending: string[] = [];
    let wasDisconnected = false;

    const settle = (tail: string[] | null) => {
      const live = pending;
      buffering = false;
      pending = [];
      setLines((prev) => {
        const base = tail ? appendOverlapping(prev, tail) : prev;
        return capLines(appendOverlapping(base, live), maxLines);
      });
      setLoading(false);
    };

    const loadTail = () => {
      seq += 1;
      const mine = seq;
      buffering = true;
      getLogs(tailLines, fetchImpl, model).then(
        (tail) => {
          if (cancelled || mine !== seq) return;
          setError(null);
          settle(tail);
        },
        (err: unknown) => {
          if (cancelled || mine !== seq) return;
          setError(err instanceof Error ? err.message : String(err));
          settle(null);
        },
      );
    };

    const onLog = (payload: unknown) => {
      // A page may follow another model too (or have just switched): keep this one's lines.
      if (model !== null && logPayloadModel(payload) !== model) return;
      const fresh = parseLogPayload(payload);
      if (fresh.length === 0) return;
      if (buffering) pending.push(...fresh);
      else setLines((prev) => capLines(prev.concat(fresh), maxLines));
    };
    const onDisconnect = () => {
      wasDisconnected = true;
    };
    const onConnect = () => {
      if (wasDisconnected) {
        wasDisconnected = false;
        // A new connection is a new session on the server: subscribe again.
        socket.emit(LLAMA_LOG_SUBSCRIBE, ...subscription);
        loadTail();
      }
    };

    socket.on(LLAMA_LOG_EVENT, onLog);
    socket.on('connect', onConnect);
    socket.on('disconnect', onDisconnect);
    // Logs are opt-in on the server; socket.io buffers this until the socket is connected.
    socket.emit(LLAMA_LOG_SUBSCRIBE, ...subscription);
    loadTail();

    return () => {
      cancelled = true;
      socket.emit(LLAMA_LOG_UNSUBSCRIBE, ...subscription);
      socket.off(LLAMA_LOG_EVENT, onLog);
      socket.off('connect', onConnect);
      socket.off('disconnect', onDisconnect);
    };
  }, [socket, model, maxLines, tailLines, fetchImpl]);

  const clear = useCallback(() => setLines([]), []);

  return { lines, loading, error, clear };
}
