import { useCallback, useEffect, useRef, useState } from 'react';
import { ApiError, cancelPull, getPulls, startPull, type FetchLike } from '../api/client';
import { mergePull, mergePulls, parsePull } from '../lib/pulls';
import type { LlamaSocket } from '../lib/socket';
import { MODEL_PULL_EVENT, type Pull } from '../types/pulls';

export interface UsePullsOptions {
  /** The page's socket, owned by {@link useLlamaSocket}; this hook only listens. */
  socket: LlamaSocket;
  fetchImpl?: FetchLike;
}

export interface UsePullsResult {
  /** Every pull llamaherd told of, newest first. */
  pulls: Pull[];
  /**
   * Whether this llamaherd pulls models: true once it listed its pulls, false when it has no
   * such route (an older one, or a front), null until it answered.
   */
  available: boolean | null;
  /** Why the last list could not be fetched; null when it was. */
  error: string | null;
  /** Start a pull; rejects with llamaherd's {@link ApiError} (its message says why). */
  start: (source: string) => Promise<Pull>;
  /** Cancel a download; rejects with llamaherd's {@link ApiError}. */
  cancel: (id: string) => Promise<Pull>;
}

/**
 * The pulls of models from Hugging Face: the list from `GET /api/models/pulls` on every
 * (re)connect (what changed while the socket was down is not lost), then each `modelPull`
 * event merged in by id. Answers and events may cross: a pull keeps the word on it that is
 * furthest along (see `supersedes`).
 */
export function usePulls({ socket, fetchImpl }: UsePullsOptions): UsePullsResult {
  const [pulls, setPulls] = useState<Pull[]>([]);
  const [available, setAvailable] = useState<boolean | null>(null);
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
          setAvailable(true);
          setError(null);
        },
        (err: unknown) => {
          if (!current) return;
          if (err instanceof ApiError && err.status === 404) setAvailable(false);
          else setError(err instanceof Error ? err.message : String(err));
        },
      );
    };
    const onPull = (payload: unknown) => {
      const pull = parsePull(payload);
      if (pull) setPulls((list) => mergePull(list, pull));
    };
    socket.on(MODEL_PULL_EVENT, onPull);
    // Fires on the first connect and after every reconnection: events missed while away are
    // in the list.
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

  return { pulls, available, error, start, cancel };
}
