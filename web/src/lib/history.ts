/**
 * Reading `GET /api/history` and shaping it for the health page: the requests' status
 * classes, and the per-minute chart points extended by the live readings.
 */
import type { History, HistoryMinute, HistoryRequest, HistoryStart, HistoryTransition } from '../types/history';
import type { LivePoint } from './metrics';

type Dict = Record<string, unknown>;

const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

function rows<T>(list: unknown, read: (row: Dict) => T | null): T[] {
  if (!Array.isArray(list)) return [];
  const out: T[] = [];
  for (const raw of list) {
    if (!isDict(raw) || typeof raw.model !== 'string') continue;
    const row = read(raw);
    if (row !== null) out.push(row);
  }
  return out;
}

const transition = (r: Dict): HistoryTransition | null => {
  const at = num(r.at);
  const from = str(r.from);
  const to = str(r.to);
  if (at === null || from === null || to === null) return null;
  return { model: String(r.model), at, from, to, reason: str(r.reason), exitCode: num(r.exitCode), signal: str(r.signal) };
};

const start = (r: Dict): HistoryStart | null => {
  const at = num(r.at);
  if (at === null) return null;
  return { model: String(r.model), at, loadTimeS: num(r.loadTimeS), peakRssBytes: num(r.peakRssBytes), ok: r.ok === true };
};

const minute = (r: Dict): HistoryMinute | null => {
  const at = num(r.minute);
  if (at === null) return null;
  const byStatus: Record<string, number> = {};
  if (isDict(r.byStatus)) for (const [k, v] of Object.entries(r.byStatus)) if (typeof v === 'number') byStatus[k] = v;
  return {
    model: String(r.model),
    minute: at,
    requests: num(r.requests) ?? 0,
    errors: num(r.errors) ?? 0,
    byStatus,
    promptTokens: num(r.promptTokens) ?? 0,
    completionTokens: num(r.completionTokens) ?? 0,
    tokensPerSecond: num(r.tokensPerSecond),
    latencyP50Ms: num(r.latencyP50Ms),
    latencyP95Ms: num(r.latencyP95Ms),
    ttftP50Ms: num(r.ttftP50Ms),
    ttftP95Ms: num(r.ttftP95Ms),
    rssBytes: num(r.rssBytes),
  };
};

const request = (r: Dict): HistoryRequest | null => {
  const at = num(r.at);
  if (at === null) return null;
  return {
    model: String(r.model),
    endpoint: str(r.endpoint) ?? '',
    status: num(r.status),
    at,
    latencyMs: num(r.latencyMs) ?? 0,
    queueWaitMs: num(r.queueWaitMs) ?? 0,
    ttftMs: num(r.ttftMs),
    promptTokens: num(r.promptTokens),
    completionTokens: num(r.completionTokens),
    tokensPerSecond: num(r.tokensPerSecond),
    error: str(r.error),
  };
};

/** Read a history payload; malformed rows are dropped, missing lists are empty. */
export function parseHistory(body: unknown): History {
  const b = isDict(body) ? body : {};
  const store = isDict(b.store) ? b.store : {};
  return {
    transitions: rows(b.transitions, transition),
    starts: rows(b.starts, start),
    minutes: rows(b.minutes, minute),
    requests: rows(b.requests, request),
    store: { ok: store.ok !== false, warning: str(store.warning) || null },
  };
}

/** A request's status class: `2xx`, `4xx`, `5xx`…; `none` when the client left before any answer. */
export type StatusClass = string;
export const STATUS_CLASSES = ['2xx', '4xx', '5xx', 'none'] as const;

export function statusClass(status: number | null): StatusClass {
  return status === null ? 'none' : `${Math.floor(status / 100)}xx`;
}

export interface RequestFilter {
  /** A model id, or null for every model. */
  model: string | null;
  /** A status class, or null for every class. */
  statusClass: StatusClass | null;
}

/** The requests that pass `filter`, newest first. */
export function filterRequests(requests: readonly HistoryRequest[], filter: RequestFilter): HistoryRequest[] {
  return requests
    .filter((r) => (filter.model === null || r.model === filter.model) && (filter.statusClass === null || statusClass(r.status) === filter.statusClass))
    .sort((a, b) => b.at - a.at);
}

/** One point of the health charts: a minute of history, or a live reading after the last one. */
export interface ChartPoint {
  /** ms since the epoch (server clock). */
  t: number;
  tokensPerSecond: number | null;
  latencyP50Ms: number | null;
  latencyP95Ms: number | null;
  rssBytes: number | null;
  live: boolean;
}

/**
 * One model's chart points in [from, to] (unix seconds): a point per minute of history (at
 * the minute's start), then the live readings newer than the last minute's start. A live
 * reading is the last minute's rolling figures (the live feed has no p95), so it continues the
 * per-minute line rather than restating a minute the history already has. Oldest first.
 */
export function chartPoints(
  minutes: readonly HistoryMinute[],
  live: readonly LivePoint[],
  model: string,
  from: number,
  to: number,
): ChartPoint[] {
  const own = minutes.filter((m) => m.model === model && m.minute >= from && m.minute <= to).sort((a, b) => a.minute - b.minute);
  const points: ChartPoint[] = own.map((m) => ({
    t: m.minute * 1000,
    tokensPerSecond: m.tokensPerSecond,
    latencyP50Ms: m.latencyP50Ms,
    latencyP95Ms: m.latencyP95Ms,
    rssBytes: m.rssBytes,
    live: false,
  }));
  const last = points[points.length - 1];
  const after = Math.max(last ? last.t : -Infinity, from * 1000);
  for (const p of live) {
    if (p.at > after && p.at <= to * 1000) {
      points.push({ t: p.at, tokensPerSecond: p.tokensPerSecond, latencyP50Ms: p.latencyP50Ms, latencyP95Ms: null, rssBytes: p.rssBytes, live: true });
    }
  }
  return points;
}

/** A transition list cut to `limit` rows may miss older ones: from when it is complete. */
export function knownSince(transitions: readonly HistoryTransition[], limit: number, since: number): number | null {
  if (transitions.length < limit) return null;
  const oldest = transitions.reduce((t, r) => Math.min(t, r.at), Infinity);
  return oldest > since ? oldest : null;
}
