import type { GatewayModel, GatewayModelsEvent } from '../types/gateway';
import type { LlamaModel, LlamaModelStatusEvent, LlamaStatus, LlamaStatusEvent } from '../types/llama';
import type { Pull } from '../types/pulls';

export const MODELS: LlamaModel[] = [
  {
    id: 'llama-3.2-3b-instruct-q4_k_m.gguf',
    name: 'llama-3.2-3b-instruct',
    size: 4294967296,
    type: 'llama',
    modified_at: 1234567890,
  },
  { id: 'tiny.gguf', name: 'tiny', size: 524288, type: 'qwen2', modified_at: 1234567890 },
];

/** What a server killed with `kill -9` sends once it has crashed. */
export const SIGKILL_CRASH: Partial<LlamaStatus> = {
  status: 'crashed',
  models: [],
  lastError: 'llama-server was killed by SIGKILL unexpectedly',
  retries: 1,
  uptime: 0,
  startedAt: null,
  pid: null,
  lastExit: {
    code: null,
    signal: 'SIGKILL',
    lines: [
      'srv  update_slots: all slots are idle',
      'srv  log_server_r: request: GET /health 127.0.0.1 200',
      'srv  log_server_r: request: GET /v1/models 127.0.0.1 200',
    ],
  },
};

/** The same crash from a server older than `lastExit.lines`: the lines are in `lastError`. */
export const SIGKILL_CRASH_OLD_SERVER: Partial<LlamaStatus> = {
  ...SIGKILL_CRASH,
  lastError:
    'llama-server was killed by SIGKILL: srv  update_slots: all slots are idle | ' +
    'srv  log_server_r: request: GET /health 127.0.0.1 200',
  lastExit: { code: null, signal: 'SIGKILL' },
};

export function statusData(overrides: Partial<LlamaStatus> = {}): LlamaStatus {
  return {
    status: 'ready',
    models: MODELS,
    lastError: null,
    retries: 0,
    uptime: 3600,
    startedAt: '2025-12-26T10:00:00Z',
    ...overrides,
  };
}

export function statusEvent(
  overrides: Partial<LlamaStatus> = {},
  timestamp = Date.parse('2025-12-26T11:00:00Z'),
): LlamaStatusEvent {
  return { type: 'llama_status', data: statusData(overrides), timestamp };
}

/** A `llamaModelStatus` payload: `model`'s server, in the shape of `llamaStatus`'s data. */
export function modelStatusEvent(
  model: string,
  overrides: Partial<LlamaStatus> = {},
  timestamp = Date.parse('2025-12-26T11:00:00Z'),
): LlamaModelStatusEvent {
  return { type: 'model_status', data: { ...statusData(overrides), model }, timestamp };
}

/** A `llamaLog` payload of `model`'s lines. */
export function modelLogEvent(model: string, ...lines: string[]) {
  return { type: 'llama_log', data: { lines, model }, timestamp: 1 };
}

/** A fetch Response with a JSON body. */
export function jsonResponse(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}

/** One `llamaModels` entry, as the server sends it (a ready, default model unless overridden). */
export function gatewayModel(overrides: Partial<GatewayModel> = {}): GatewayModel {
  return {
    id: 'a',
    aliases: [],
    default: true,
    state: 'ready',
    phase: 'ready',
    loaded: true,
    draining: false,
    inFlight: 0,
    queued: 0,
    maxConcurrency: 4,
    lastUsed: null,
    ttlSeconds: null,
    ttlLeft: null,
    pinned: false,
    port: 8134,
    pid: 4242,
    retries: 0,
    lastError: null,
    waitingFor: null,
    stopped: null,
    retryIn: null,
    preload: null,
    path: '/srv/models/a.gguf',
    size: 439040,
    architecture: 'llama',
    parameters: 108224,
    quantisation: 'F32',
    contextLength: 2048,
    memoryMb: 0.9,
    removable: false,
    ...overrides,
  };
}

/** Two models: `a` loaded (the default), `b` not. */
export const TWO_MODELS: GatewayModel[] = [
  gatewayModel(),
  gatewayModel({
    id: 'b',
    default: false,
    state: 'initial',
    phase: 'unloaded',
    loaded: false,
    maxConcurrency: 1,
    port: 42977,
    pid: null,
    path: '/srv/models/b.gguf',
    quantisation: 'Q4_K_M',
    size: 4294967296,
  }),
];

export function modelsEvent(
  models: GatewayModel[] = TWO_MODELS,
  timestamp = Date.parse('2025-12-26T11:00:00Z'),
): GatewayModelsEvent {
  return { type: 'llama_models', data: { models }, timestamp };
}

/**
 * A streamed fetch Response whose body the test writes piece by piece (`push`), ends
 * (`close`) or breaks (`fail`). When `signal` aborts, the body fails as a real fetch's does.
 */
export function streamedResponse(
  init: { status?: number; headers?: Record<string, string>; signal?: AbortSignal | null } = {},
) {
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let cancelled = false;
  const body = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
    },
    cancel() {
      cancelled = true;
    },
  });
  const abortError = () => new DOMException('The operation was aborted.', 'AbortError');
  init.signal?.addEventListener('abort', () => {
    try {
      controller.error(abortError());
    } catch {
      // already closed
    }
  });
  const response = new Response(body, {
    status: init.status ?? 200,
    headers: { 'Content-Type': 'text/event-stream', ...(init.headers ?? {}) },
  });
  return {
    response,
    push: (chunk: string | Uint8Array) => controller.enqueue(typeof chunk === 'string' ? encoder.encode(chunk) : chunk),
    close: () => controller.close(),
    fail: (error: unknown) => controller.error(error),
    get cancelled() {
      return cancelled;
    },
  };
}

/** An OpenAI chat stream chunk carrying `content` (and `timings`, for the last one). */
export function chatChunk(content: string | null, extra: Record<string, unknown> = {}): string {
  const delta = content === null ? {} : { content };
  return `data: ${JSON.stringify({ object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: null }], ...extra })}\n\n`;
}

export const FINAL_TIMINGS = {
  prompt_n: 20,
  prompt_ms: 240.4,
  prompt_per_second: 83.2,
  predicted_n: 20,
  predicted_ms: 1776.4,
  predicted_per_second: 10.695933743756951,
};

/** One pull as llamaherd sends it: a download a quarter of the way through, unless overridden. */
export function pullFixture(overrides: Partial<Pull> = {}): Pull {
  return {
    id: 'p1',
    source: 'acme/tiny-GGUF:Q4_K_M',
    repo: 'acme/tiny-GGUF',
    files: ['tiny-Q4_K_M.gguf'],
    model: 'tiny-Q4_K_M',
    state: 'downloading',
    bytes: 12 * 1024 * 1024,
    total: 48 * 1024 * 1024,
    error: null,
    startedAt: Date.parse('2025-12-26T11:00:00Z'),
    ...overrides,
  };
}
