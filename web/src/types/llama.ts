/**
 * The wire contract between llamaherd (Python) and this dashboard.
 *
 * Socket.IO events (server -> client):
 *   - `llamaStatus`: {@link LlamaStatusEvent}, sent on connect, on every state
 *     change and in answer to the client emitting `requestLlamaStatus`.
 *   - `llamaLog`: {@link LlamaLogEvent}, new output lines of llama-server (the primary
 *     model's after `subscribeLlamaLogs`, any model's after `subscribeLlamaLogs` with `{model}`).
 *   - `llamaModelStatus`: {@link LlamaModelStatusEvent}, any model's server, on each change
 *     and in answer to `requestLlamaModelStatus` with `{model}`.
 */

/** Every state the supervisor reports for llama-server. */
export type LlamaServiceStatus =
  | 'initial'
  | 'checking'
  | 'starting'
  | 'ready'
  | 'crashed'
  | 'stopping'
  | 'error';

/** A model served by llama-server. */
export interface LlamaModel {
  id: string;
  name: string;
  /** Size in bytes. */
  size: number;
  /** Architecture / type, e.g. `llama`. */
  type: string;
  /** Unix seconds. */
  modified_at: number;
}

/** The `data` object of a status event (also `GET /api/status`). */
export interface LlamaStatus {
  status: LlamaServiceStatus;
  models: LlamaModel[];
  /**
   * Why llama-server is down, in one sentence, e.g. "llama-server was killed by SIGKILL
   * unexpectedly". Older servers appended its last output lines joined by " | ".
   */
  lastError: string | null;
  retries: number;
  /** Seconds, at the time of the event. */
  uptime: number;
  /** ISO-8601 UTC, or null when not running. */
  startedAt: string | null;
  /** Optional extras the server sends. */
  maxRetries?: number;
  pid?: number | null;
  /** llamaherd found a server already running and did not start it. */
  adopted?: boolean;
  /** ISO-8601 UTC of the next automatic restart attempt, or null. */
  nextRetryAt?: string | null;
  /** Times the supervisor restarted llama-server. */
  restarts?: number;
  /** How llama-server last exited, or null. */
  lastExit?: LlamaExit | null;
}

/**
 * How llama-server last exited: its return code and/or the signal that ended it, and what
 * it said before it died. The reason itself is `lastError` (one sentence, at most one quoted
 * line); `lines` are the evidence behind it.
 */
export interface LlamaExit {
  code: number | null;
  signal: string | null;
  /**
   * The telling lines of the dead server's output (its complaints, else its last lines; up
   * to 5), oldest first. Absent from servers older than the field.
   */
  lines?: string[];
}

/** Socket.IO `llamaStatus` payload. */
export interface LlamaStatusEvent {
  type: 'llama_status';
  data: LlamaStatus;
  /** Server time in milliseconds since the epoch. */
  timestamp: number;
}

/** Socket.IO `llamaLog` payload; `model` names whose lines they are (absent from older servers). */
export interface LlamaLogEvent {
  type: 'llama_log';
  data: { lines: string[]; model?: string };
  timestamp: number;
}

/** The `data` of `llamaModelStatus` (also `GET /api/models/{id}/status`): a status, with its model. */
export interface LlamaModelStatus extends LlamaStatus {
  model: string;
}

/** Socket.IO `llamaModelStatus` payload. */
export interface LlamaModelStatusEvent {
  type: 'model_status';
  data: LlamaModelStatus;
  timestamp: number;
}

/** `GET /api/llama/logs?lines=N` */
export interface LlamaLogsResponse {
  lines: string[];
}

/** `POST /api/llama/{start,stop,restart}` (and `/api/models/{id}/...`) success body. */
export interface LlamaControlResponse {
  status: LlamaStatus;
}

export type LlamaControlAction = 'start' | 'stop' | 'restart';

/** Error body of every failing REST call. */
export interface ApiErrorBody {
  /** `code` is there for some errors only (`missing_api_key`, `invalid_api_key`, `insufficient_scope`). */
  error: { message: string; type: string; code?: string };
}

/** `GET /healthz` */
export interface HealthInfo {
  status: string;
  name: string;
  version: string;
}

/** Socket.IO event names. */
export const LLAMA_STATUS_EVENT = 'llamaStatus';
export const LLAMA_LOG_EVENT = 'llamaLog';
/** Client -> server: send me `llamaLog` events (they are opt-in). */
export const LLAMA_LOG_SUBSCRIBE = 'subscribeLlamaLogs';
/** Client -> server: stop sending me `llamaLog` events. */
export const LLAMA_LOG_UNSUBSCRIBE = 'unsubscribeLlamaLogs';
export const REQUEST_LLAMA_STATUS = 'requestLlamaStatus';
export const LLAMA_MODEL_STATUS_EVENT = 'llamaModelStatus';
/** Client -> server, with `{model}`: send me that model's `llamaModelStatus` now. */
export const REQUEST_LLAMA_MODEL_STATUS = 'requestLlamaModelStatus';

/** Retries shown as `retry n/5` when the server does not send `maxRetries`. */
export const DEFAULT_MAX_RETRIES = 5;
