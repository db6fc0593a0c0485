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
