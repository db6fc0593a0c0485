import { useCallback, useEffect, useRef, useState } from 'react';
import { cancelPull, getPulls, startPull, type FetchLike } from '../api/client';
import { mergePull, mergePulls, parsePull } from '../lib/pulls';
import type { LlamaSocket } from '../lib/socket';
import { MODEL_PULL_EVENT, type Pull } from '../types/pulls';

export interface UsePullsOptions {
  /** The page's socket, owned by {@link useLlamaSocket}; this hook only listens. */
  socket: LlamaSocket;
  fetchImpl?: FetchLike;
}

export interface UsePullsResult {
  /** Every pull this page has heard of, newest first. */
  pulls: Pull[];
  /** Why the last list could not be fetched; null when it was. */
  error: string | null;
  /** Start a pull; rejects with llamaherd's {@link ApiError} (its message says why). */
  start: (source: string) => Promise<Pull>;
  /** Cancel a download; rejects with llamaherd's {@link ApiError}. */
  cancel: (id: string) => Promise<Pull>;
}

/**
 * The pulls of models from Hugging Face: each `modelPull` event merged in by id, and the list
 * from `GET /api/models/pulls` after every reconnect (what changed while the socket was down
 * is not lost). Answers and events may cross: a pull keeps the word on it that is furthest
 * along (see `supersedes`).
 *
 * The list is asked for when the page connects and after every reconnection (events missed
 * while away are in it); a llamaherd that pulls nothing answers an empty list.
 */
export function usePulls({ socket, fetchImpl }: UsePullsOptions): UsePullsResult {
  const [pulls, setPulls] = useState<Pull[]>([]);
  const [error, setError] = useState<string | null>(null);
  const mounted = useRef(true);

  useEffect(() => {
    mounted.current = true;
    let current = true;
    const fetchList = () => {
      getPulls(fetchImpl).then(
        (fetched) => {
          if (!current) return;
          setPulls((list) => mergePulls(list, fetched));
          setError(null);
        },
        (err: unknown) => {
          if (current) setError(err instanceof Error ? err.message : String(err));
        },
      );
    };
    const onPull = (payload: unknown) => {
      const pull = parsePull(payload);
      if (!pull) return;
      setPulls((list) => mergePull(list, pull));
    };
    socket.on(MODEL_PULL_EVENT, onPull);
    // Fires after every reconnection too: events missed while away are in the list.
    socket.on('connect', fetchList);
    if (socket.connected) fetchList();
    return () => {
      current = false;
      mounted.current = false;
      socket.off(MODEL_PULL_EVENT, onPull);
      socket.off('connect', fetchList);
    };
  }, [socket, fetchImpl]);

  const take = useCallback((pull: Pull) => {
    if (mounted.current) setPulls((list) => mergePull(list, pull));
    return pull;
  }, []);
  const start = useCallback((source: string) => startPull(source, fetchImpl).then(take), [fetchImpl, take]);
  const cancel = useCallback((id: string) => cancelPull(id, fetchImpl).then(take), [fetchImpl, take]);

  return { pulls, error, start, cancel };
}
