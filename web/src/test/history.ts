import type { History, HistoryMinute, HistoryRequest, HistoryStart, HistoryTransition } from '../types/history';
import type { ModelMetrics } from '../types/metrics';

/** 2025-12-26T12:00:00Z, unix seconds: "now" in the health fixtures. */
export const NOW_S = 1_766_750_400;

export function transition(overrides: Partial<HistoryTransition> = {}): HistoryTransition {
  return { model: 'a', at: NOW_S - 600, from: 'starting', to: 'ready', reason: null, exitCode: null, signal: null, ...overrides };
}

export function minuteRow(overrides: Partial<HistoryMinute> = {}): HistoryMinute {
  return {
    model: 'a',
    minute: NOW_S - 300,
    requests: 3,
    errors: 0,
    byStatus: { '200': 3 },
    promptTokens: 60,
    completionTokens: 48,
    tokensPerSecond: 812.5,
    latencyP50Ms: 120,
    latencyP95Ms: 480,
    ttftP50Ms: null,
    ttftP95Ms: null,
    rssBytes: 20 * 1048576,
    ...overrides,
  };
}

export function startRow(overrides: Partial<HistoryStart> = {}): HistoryStart {
  return { model: 'a', at: NOW_S - 900, loadTimeS: 0.42, peakRssBytes: 21 * 1048576, ok: true, ...overrides };
}

export function requestRow(overrides: Partial<HistoryRequest> = {}): HistoryRequest {
  return {
    model: 'a',
    endpoint: '/v1/chat/completions',
    status: 200,
    at: NOW_S - 120,
    latencyMs: 203.4,
    queueWaitMs: 0.2,
    ttftMs: null,
    promptTokens: 20,
    completionTokens: 16,
    tokensPerSecond: 1500.2,
    error: null,
    ...overrides,
  };
}

/**
 * `a`: started 15 min ago, killed by SIGKILL 10 min ago and back; answered three requests and
 * failed one. `b`: started 5 min ago, one request.
 */
export function historyFixture(overrides: Partial<History> = {}): History {
  return {
    transitions: [
      transition({ at: NOW_S - 901, from: 'initial', to: 'checking' }),
      transition({ at: NOW_S - 900.5, from: 'checking', to: 'starting' }),
      transition({ at: NOW_S - 900, from: 'starting', to: 'ready' }),
      transition({ at: NOW_S - 600, from: 'ready', to: 'crashed', signal: 'SIGKILL', exitCode: -9, reason: 'llama-server was killed by SIGKILL' }),
      transition({ at: NOW_S - 599, from: 'crashed', to: 'starting' }),
      transition({ at: NOW_S - 598, from: 'starting', to: 'ready' }),
      transition({ model: 'b', at: NOW_S - 301, from: 'initial', to: 'checking' }),
      transition({ model: 'b', at: NOW_S - 300, from: 'checking', to: 'ready' }),
    ],
    starts: [startRow(), startRow({ at: NOW_S - 598, loadTimeS: 0.35 }), startRow({ model: 'b', at: NOW_S - 300, loadTimeS: 0.5 })],
    minutes: [minuteRow({ minute: NOW_S - 540 }), minuteRow({ minute: NOW_S - 480, tokensPerSecond: 900, latencyP50Ms: 90, latencyP95Ms: 200 })],
    requests: [
      requestRow({ at: NOW_S - 500 }),
      requestRow({ at: NOW_S - 400, status: 503, error: 'queue full', tokensPerSecond: null, promptTokens: null, completionTokens: null }),
      requestRow({ model: 'b', at: NOW_S - 200 }),
      requestRow({ at: NOW_S - 100, status: null, error: 'client left' }),
    ],
    store: { ok: true, warning: null },
    ...overrides,
  };
}

export function modelMetrics(overrides: Partial<ModelMetrics> = {}): ModelMetrics {
  return {
    id: 'a',
    requests: { total: 4, errors: 1 },
    tokensPerSecond: 1234.56,
    promptTokensPerSecond: 5000,
    latencyP50Ms: 114,
    ttftP50Ms: null,
    requestsLastMinute: 2,
    queued: 0,
    inFlight: 0,
    memory: { rssBytes: 20 * 1048576, vramBytes: null, cpuPercent: 1.5 },
    slotsBusy: 0,
    slotsTotal: 4,
    loadTimeS: 0.35,
    peakLoadRssBytes: 21 * 1048576,
    ...overrides,
  };
}

export function metricsEvent(models: ModelMetrics[], timestamp = NOW_S * 1000) {
  return { type: 'llama_metrics', timestamp, data: { models } };
}
