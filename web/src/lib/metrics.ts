import type { ModelMetrics } from '../types/metrics';

type Dict = Record<string, unknown>;

const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);
const count = (v: unknown): number => num(v) ?? 0;

function normalizeMetrics(raw: unknown): ModelMetrics | null {
  if (!isDict(raw) || typeof raw.id !== 'string' || raw.id === '') return null;
  const requests = isDict(raw.requests) ? raw.requests : {};
  const memory = isDict(raw.memory) ? raw.memory : {};
  return {
    id: raw.id,
    requests: { total: count(requests.total), errors: count(requests.errors) },
    tokensPerSecond: num(raw.tokensPerSecond),
    promptTokensPerSecond: num(raw.promptTokensPerSecond),
    latencyP50Ms: num(raw.latencyP50Ms),
    ttftP50Ms: num(raw.ttftP50Ms),
    requestsLastMinute: count(raw.requestsLastMinute),
    queued: count(raw.queued),
    inFlight: count(raw.inFlight),
    memory: { rssBytes: num(memory.rssBytes), vramBytes: num(memory.vramBytes), cpuPercent: num(memory.cpuPercent) },
    slotsBusy: num(raw.slotsBusy),
    slotsTotal: num(raw.slotsTotal),
    loadTimeS: num(raw.loadTimeS),
    peakLoadRssBytes: num(raw.peakLoadRssBytes),
  };
}

/**
 * Read a `llamaMetrics` payload (`{type, timestamp, data: {models}}`); null when it holds no
 * model list. Fields a model lacks read as unknown (null) or zero (counts), never as a throw.
 */
export function parseMetricsPayload(payload: unknown): { models: ModelMetrics[]; timestamp: number | null } | null {
  if (!isDict(payload)) return null;
  const data = isDict(payload.data) ? payload.data : payload;
  if (!Array.isArray(data.models)) return null;
  const models = data.models.map(normalizeMetrics).filter((m): m is ModelMetrics => m !== null);
  return { models, timestamp: num(payload.timestamp) };
}

/** One live reading of a model, kept to extend the history charts past their last minute. */
export interface LivePoint {
  /** Server time, ms since the epoch. */
  at: number;
  tokensPerSecond: number | null;
  latencyP50Ms: number | null;
  rssBytes: number | null;
}

/** A reading worth keeping: it measured something. */
export function livePoint(m: ModelMetrics, at: number): LivePoint | null {
  const point = { at, tokensPerSecond: m.tokensPerSecond, latencyP50Ms: m.latencyP50Ms, rssBytes: m.memory.rssBytes };
  return point.tokensPerSecond === null && point.latencyP50Ms === null && point.rssBytes === null ? null : point;
}

/**
 * `points` with `next` readings appended (one per model that measured something), each
 * model's list cut to its newest `max`. Pure: returns new lists, only for models that changed.
 */
export function appendLivePoints(
  points: Readonly<Record<string, readonly LivePoint[]>>,
  models: readonly ModelMetrics[],
  at: number,
  max: number,
): Record<string, readonly LivePoint[]> {
  const out: Record<string, readonly LivePoint[]> = { ...points };
  for (const m of models) {
    const point = livePoint(m, at);
    if (!point) continue;
    const list = [...(out[m.id] ?? []), point];
    out[m.id] = list.length > max ? list.slice(list.length - max) : list;
  }
  return out;
}

/** `12.3 tok/s`, or an em dash when unknown. */
export function formatRate(tokensPerSecond: number | null | undefined): string {
  if (typeof tokensPerSecond !== 'number' || !Number.isFinite(tokensPerSecond)) return '—';
  return `${tokensPerSecond >= 100 ? Math.round(tokensPerSecond) : tokensPerSecond.toFixed(1)} tok/s`;
}

/** `1/4` slots busy, or an em dash when not measured. */
export function formatSlots(busy: number | null | undefined, total: number | null | undefined): string {
  if (typeof busy !== 'number' || typeof total !== 'number') return '—';
  return `${busy}/${total}`;
}
