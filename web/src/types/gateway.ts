/**
 * The gateway's wire contract: every model llamaherd serves, and the inference stream.
 *
 * Socket.IO (server -> client):
 *   - `llamaModels`: {@link GatewayModelsEvent}, sent on connect, on change (coalesced, at
 *     most a few times a second) and in answer to `requestLlamaModels`. `lastUsed` and
 *     `ttlLeft` tick on the server without a new event: the page ticks them itself.
 * Socket.IO (client -> server, with an acknowledgement):
 *   - `loadModel` / `unloadModel` with `{id}`: {@link ModelActionAck}.
 * REST: `GET /api/gateway/models`, `POST /api/models/{id}/load|unload`.
 * Inference: `POST /v1/chat/completions` (OpenAI's, streamed as server-sent events).
 */

/** What the scheduler is doing with a model. */
export type ModelPhase = 'unloaded' | 'loading' | 'ready' | 'unloading' | 'failed';

/** One model the gateway serves, loaded or not. */
export interface GatewayModel {
  id: string;
  aliases: string[];
  /** Requests that name no model go to this one. */
  default: boolean;
  /** Its llama-server's supervisor state (`initial`, `starting`, `ready`, `crashed`...). */
  state: string;
  /** The scheduler's phase; a newer server may send one this build does not know. */
  phase: ModelPhase | string;
  loaded: boolean;
  /** Finishing its requests in flight before it unloads (evicted, idle, or asked to). */
  draining: boolean;
  inFlight: number;
  queued: number;
  maxConcurrency: number;
  /** Unix ms (server clock) of the last request, or null. */
  lastUsed: number | null;
  ttlSeconds: number | null;
  /** Seconds until the idle unload at the time of the event, or null when none is due. */
  ttlLeft: number | null;
  pinned: boolean;
  port: number | null;
  pid: number | null;
  retries: number;
  lastError: string | null;
  /** Why its requests wait, when they do. */
  waitingFor: string | null;
  /** A manual stop's reason: requests get 503 until it is loaded (started) again. */
  stopped: string | null;
  /** A failed model: seconds until a request may try it again. */
  retryIn: number | null;
  /** Its place in the order of models loaded at start, or null (loaded on first request). */
  preload: number | null;
  path: string | null;
  /** Bytes. */
  size: number | null;
  architecture: string | null;
  parameters: number | null;
  quantisation: string | null;
  contextLength: number | null;
  memoryMb: number | null;
  /** Pulled from Hugging Face into the models folder (so it may be removed); false when unsaid. */
  removable: boolean;
}

/** How the last config reload went (`llamaModels` data.config.lastReload). */
export interface ReloadReport {
  ok: boolean;
  /** Unix ms. */
  at: number;
  trigger: string;
  changes: string[];
  needsRestart: string[];
  error: string | null;
}

/** When the config was loaded, and the last reload (`llamaModels` data.config). */
export interface ConfigInfo {
  path: string | null;
  /** Unix ms. */
  loadedAt: number | null;
  lastReload: ReloadReport | null;
}

/** A front's peer: another llamaherd whose models it serves (`llamaModels` data.peers). */
export interface PeerStatus {
  name: string;
  url: string;
  reachable: boolean;
  problem: string | null;
  models: string[];
}

/** Socket.IO `llamaModels` payload. */
export interface GatewayModelsEvent {
  type: 'llama_models';
  data: { models: GatewayModel[] };
  /** Server time in milliseconds since the epoch. */
  timestamp: number;
}

export type ModelAction = 'load' | 'unload';

/** The acknowledgement of `loadModel` / `unloadModel`. */
export type ModelActionAck = { ok: true; model: GatewayModel } | { ok: false; error: string };

/** One message of an OpenAI chat. */
export interface ChatMessage {
  role: 'system' | 'user' | 'assistant';
  content: string;
}

/** llama-server's figures, in the last chunk of a stream. */
export interface ChatTimings {
  predicted_n?: number;
  predicted_ms?: number;
  predicted_per_second?: number;
  prompt_n?: number;
  prompt_ms?: number;
  prompt_per_second?: number;
  cache_n?: number;
}

export const LLAMA_MODELS_EVENT = 'llamaModels';
export const REQUEST_LLAMA_MODELS = 'requestLlamaModels';
export const LOAD_MODEL = 'loadModel';
export const UNLOAD_MODEL = 'unloadModel';
export const CHAT_COMPLETIONS_PATH = '/v1/chat/completions';
