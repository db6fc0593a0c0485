import type { LlamaModel, LlamaStatus, LlamaStatusEvent } from '../types/llama';

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

/** A fetch Response with a JSON body. */
export function jsonResponse(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body), {
    status,
    headers: { 'Content-Type': 'application/json' },
  });
}
