import { useCallback, useEffect, useState } from 'react';
import { getLogs, type FetchLike } from '../api/client';
import { appendOverlapping, capLines } from '../lib/lines';
import type { LlamaSocket } from '../lib/socket';
import { parseLogPayload } from '../lib/status';
import { LLAMA_LOG_EVENT, LLAMA_LOG_SUBSCRIBE, LLAMA_LOG_UNSUBSCRIBE } from '../types/llama';

const DEFAULT_MAX_LOG_LINES = 1000;
const DEFAULT_TAIL_LINES = 200;

export interface UseLlamaLogsOptions {
  /** The shared socket (owned by the caller). */
  socket: LlamaSocket | null;
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
 * llama-server's output: the tail from `GET /api/llama/logs`, then the live
 * `llamaLog` lines (subscribed to with `subscribeLlamaLogs`), at most `maxLines`. After a reconnect the tail is fetched
 * again and merged so nothing said while away is lost.
 */
export function useLlamaLogs({
  socket,
  maxLines = DEFAULT_MAX_LOG_LINES,
  tailLines = DEFAULT_TAIL_LINES,
  fetchImpl,
}: UseLlamaLogsOptions): UseLlamaLogsResult {
  const [lines, setLines] = useState<string[]>([]);
  const [loading, setLoading] = useState(true);
  const [error, setError] = useState<string | null>(null);

  useEffect(() => {
    if (!socket) return undefined;
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
      getLogs(tailLines, fetchImpl).then(
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
        socket.emit(LLAMA_LOG_SUBSCRIBE);
        loadTail();
      }
    };

    socket.on(LLAMA_LOG_EVENT, onLog);
    socket.on('connect', onConnect);
    socket.on('disconnect', onDisconnect);
    // Logs are opt-in on the server; socket.io buffers this until the socket is connected.
    socket.emit(LLAMA_LOG_SUBSCRIBE);
    loadTail();

    return () => {
      cancelled = true;
      socket.emit(LLAMA_LOG_UNSUBSCRIBE);
      socket.off(LLAMA_LOG_EVENT, onLog);
      socket.off('connect', onConnect);
      socket.off('disconnect', onDisconnect);
    };
  }, [socket, maxLines, tailLines, fetchImpl]);

  const clear = useCallback(() => setLines([]), []);

  return { lines, loading, error, clear };
}
