/**
 * The live measurements' wire contract (Socket.IO, server -> client).
 *
 *   - `llamaMetrics`: {@link LlamaMetricsEvent}, sent on connect, in answer to
 *     `requestLlamaMetrics`, and at most once a second while a figure changes (a finished
 *     request, the queue, a resource sample). The speeds and latencies are over a rolling
 *     window of the last minute: they go back to null a minute after the last request.
 */

/** What one model's llama-server costs while it runs; null: not measured (not running). */
export interface ModelMemory {
  rssBytes: number | null;
  /** GPU memory, only where llamaherd can read it (NVML). */
  vramBytes: number | null;
  cpuPercent: number | null;
}

/** One model's live figures. */
export interface ModelMetrics {
  id: string;
  /** Since llamaherd started. */
  requests: { total: number; errors: number };
  /** Mean generation speed of the requests of the last minute. */
  tokensPerSecond: number | null;
  promptTokensPerSecond: number | null;
  latencyP50Ms: number | null;
  /** Time to first token (streams only). */
  ttftP50Ms: number | null;
  requestsLastMinute: number;
  queued: number;
  inFlight: number;
  memory: ModelMemory;
  slotsBusy: number | null;
  slotsTotal: number | null;
  /** The last start's load time, seconds. */
  loadTimeS: number | null;
  peakLoadRssBytes: number | null;
}

/** Socket.IO `llamaMetrics` payload. */
export interface LlamaMetricsEvent {
  type: 'llama_metrics';
  /** Server time in milliseconds since the epoch. */
  timestamp: number;
  data: { models: ModelMetrics[] };
}

export const LLAMA_METRICS_EVENT = 'llamaMetrics';
export const REQUEST_LLAMA_METRICS = 'requestLlamaMetrics';
