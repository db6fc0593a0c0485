import { useEffect, useRef, useState } from 'react';
import { ApiError, getHistory, type FetchLike } from '../api/client';
import type { History } from '../types/history';

/** How often the history is fetched again while it is shown. */
export const HISTORY_REFRESH_MS = 10_000;

export interface UseHistoryOptions {
  /** Fetch only while true (the health page is the view shown). */
  active: boolean;
  /** One model's id, or every model's history when absent. */
  model?: string | null;
  /** How far back, in seconds from now. */
  windowS: number;
  /** The most rows of each list (the newest are kept). */
  limit: number;
  /** Fetch again at once whenever this changes (a model's state changed). */
  refreshKey?: unknown;
  /** Server clock minus local clock, ms: `since` is computed on the server's clock. */
  clockOffsetMs?: number;
  intervalMs?: number;
  fetchImpl?: FetchLike;
}

export interface UseHistoryResult {
  history: History | null;
  /** The server answered 404: history is switched off. */
  disabled: boolean;
  /** Why the last fetch failed (the last history stays shown), or null. */
  error: string | null;
  /** The `since` and `limit` the shown history was fetched with (unix seconds). */
  since: number | null;
  limit: number;
}

interface State {
  history: History | null;
  disabled: boolean;
  error: string | null;
  since: number | null;
}

const INITIAL: State = { history: null, disabled: false, error: null, since: null };

/**
 * `GET /api/history` for the last `windowS` seconds: fetched at once, again `intervalMs`
 * after each answer while the page is visible (at once when it becomes visible again), and at
 * once when the query or `refreshKey` changes. A newer fetch aborts an older one, so an
 * answer never overwrites a later one.
 */
export function useHistory({
  active,
  model = null,
  windowS,
  limit,
  refreshKey,
  clockOffsetMs = 0,
  intervalMs = HISTORY_REFRESH_MS,
  fetchImpl,
}: UseHistoryOptions): UseHistoryResult {
  const [state, setState] = useState<State>(INITIAL);
  // Read at each fetch; a new offset (every llamaMetrics) is no reason to fetch.
  const offset = useRef(clockOffsetMs);
  offset.current = clockOffsetMs;

  useEffect(() => {
    if (!active) return undefined;
    let disposed = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    let controller: AbortController | null = null;
    const visible = () => document.visibilityState !== 'hidden';

    const run = async () => {
      clearTimeout(timer);
      controller?.abort();
      const mine = (controller = new AbortController());
      const since = Math.floor((Date.now() + offset.current) / 1000 - windowS);
      const query = { since, limit, ...(model ? { model } : {}) };
      try {
        const history = await getHistory(query, fetchImpl, mine.signal);
        if (disposed || mine.signal.aborted) return;
        setState({ history, disabled: false, error: null, since });
      } catch (err) {
        if (disposed || mine.signal.aborted) return;
        if (err instanceof ApiError && err.status === 404) setState({ ...INITIAL, disabled: true });
        else setState((s) => ({ ...s, error: err instanceof Error ? err.message : String(err) }));
      }
      if (visible()) timer = setTimeout(() => void run(), intervalMs);
    };
    const onVisibility = () => {
      if (visible()) void run();
      else clearTimeout(timer);
    };
    document.addEventListener('visibilitychange', onVisibility);
    void run();
    return () => {
      disposed = true;
      clearTimeout(timer);
      controller?.abort();
      document.removeEventListener('visibilitychange', onVisibility);
    };
  }, [active, model, windowS, limit, refreshKey, intervalMs, fetchImpl]);

  return { ...state, limit };
}
