/**
 * `GET /api/history?model=&since=&until=&limit=`: what the history store kept. Times are unix
 * seconds (floats, server clock); each list is oldest first and holds at most `limit` rows,
 * the newest. 404 when history is switched off (`history_enabled: false`).
 */

/** One change of a model's supervisor state. */
export interface HistoryTransition {
  model: string;
  at: number;
  from: string;
  to: string;
  /** The server's lastError at that moment. */
  reason: string | null;
  exitCode: number | null;
  /** e.g. `SIGKILL`. */
  signal: string | null;
}

/** One start of a model's llama-server; `at` is when it ended (ready, crash or error). */
export interface HistoryStart {
  model: string;
  at: number;
  /** Seconds until it was ready; null when it never was. */
  loadTimeS: number | null;
  peakRssBytes: number | null;
  /** It became ready. */
  ok: boolean;
}

/** One model's figures for one minute (`minute`: its start, a multiple of 60). */
export interface HistoryMinute {
  model: string;
  minute: number;
  /** Requests that ended in this minute. */
  requests: number;
  errors: number;
  /** Requests by HTTP status; `none`: the client left before any answer. */
  byStatus: Record<string, number>;
  promptTokens: number;
  completionTokens: number;
  tokensPerSecond: number | null;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  ttftP50Ms: number | null;
  ttftP95Ms: number | null;
  /** The largest resident memory sampled in the minute. */
  rssBytes: number | null;
}

/** One request the gateway served (or refused); `at` is when it arrived. */
export interface HistoryRequest {
  model: string;
  endpoint: string;
  /** null: the client left before any answer. */
  status: number | null;
  at: number;
  latencyMs: number;
  queueWaitMs: number;
  ttftMs: number | null;
  promptTokens: number | null;
  completionTokens: number | null;
  tokensPerSecond: number | null;
  error: string | null;
}

export interface HistoryStoreState {
  /** False while the history file cannot be written. */
  ok: boolean;
  warning: string | null;
}

export interface History {
  transitions: HistoryTransition[];
  starts: HistoryStart[];
  minutes: HistoryMinute[];
  requests: HistoryRequest[];
  store: HistoryStoreState;
}

export interface HistoryQuery {
  model?: string;
  /** Unix seconds, inclusive. */
  since?: number;
  until?: number;
  limit?: number;
}

export const HISTORY_PATH = '/api/history';
