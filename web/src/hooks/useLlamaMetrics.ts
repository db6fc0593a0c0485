import { useCallback, useEffect, useState } from 'react';
import { appendLivePoints, parseMetricsPayload, type LivePoint } from '../lib/metrics';
import type { LlamaSocket } from '../lib/socket';
import { LLAMA_METRICS_EVENT, REQUEST_LLAMA_METRICS, type ModelMetrics } from '../types/metrics';

/** Live readings kept per model: at most one a second, so a quarter of an hour. */
export const MAX_LIVE_POINTS = 900;

export interface UseLlamaMetricsOptions {
  /** The page's socket, owned by {@link useLlamaSocket}; this hook only listens and emits. */
  socket: LlamaSocket;
  maxPoints?: number;
}

export interface UseLlamaMetricsResult {
  /** The latest figures per model id. */
  byId: Readonly<Record<string, ModelMetrics>>;
  /** No payload has arrived yet. */
  isLoading: boolean;
  /** The readings received since the page opened, per model id, oldest first. */
  points: Readonly<Record<string, readonly LivePoint[]>>;
  /**
   * Server clock minus local clock (ms), from the latest payload; 0 before one. History
   * times are the server's: add this to `Date.now()` to compare them with now.
   */
  clockOffsetMs: number;
  /** Ask for the figures again. */
  refresh: () => void;
}

interface State {
  byId: Readonly<Record<string, ModelMetrics>>;
  points: Readonly<Record<string, readonly LivePoint[]>>;
  clockOffsetMs: number;
}

/**
 * Every model's live figures (tokens/s, latency, memory, slots) over the page's socket:
 * requests them on every (re)connect and follows `llamaMetrics`. It never connects or
 * disconnects the socket.
 */
export function useLlamaMetrics({ socket, maxPoints = MAX_LIVE_POINTS }: UseLlamaMetricsOptions): UseLlamaMetricsResult {
  const [state, setState] = useState<State | null>(null);

  useEffect(() => {
    const onMetrics = (payload: unknown) => {
      const parsed = parseMetricsPayload(payload);
      if (!parsed) return;
      const receivedAt = Date.now();
      const at = parsed.timestamp ?? receivedAt;
      setState((previous) => ({
        byId: Object.fromEntries(parsed.models.map((m) => [m.id, m])),
        points: appendLivePoints(previous?.points ?? {}, parsed.models, at, maxPoints),
        clockOffsetMs: parsed.timestamp === null ? (previous?.clockOffsetMs ?? 0) : parsed.timestamp - receivedAt,
      }));
    };
    // Fires on the first connect and after every reconnection.
    const onConnect = () => socket.emit(REQUEST_LLAMA_METRICS);
    socket.on(LLAMA_METRICS_EVENT, onMetrics);
    socket.on('connect', onConnect);
    if (socket.connected) onConnect();
    return () => {
      socket.off(LLAMA_METRICS_EVENT, onMetrics);
      socket.off('connect', onConnect);
    };
  }, [socket, maxPoints]);

  const refresh = useCallback(() => {
    if (socket.connected) socket.emit(REQUEST_LLAMA_METRICS);
  }, [socket]);

  return {
    byId: state?.byId ?? EMPTY_BY_ID,
    isLoading: state === null,
    points: state?.points ?? EMPTY_POINTS,
    clockOffsetMs: state?.clockOffsetMs ?? 0,
    refresh,
  };
}

const EMPTY_BY_ID: Readonly<Record<string, ModelMetrics>> = {};
const EMPTY_POINTS: Readonly<Record<string, readonly LivePoint[]>> = {};
