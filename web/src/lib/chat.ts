import type { FetchLike } from '../api/client';
import { CHAT_COMPLETIONS_PATH, type ChatMessage, type ChatTimings } from '../types/gateway';
import { apiKeyStore, authorizationHeader, httpAuthProblem } from './apiKey';
import { parseSse, SSE_START, type SseState } from './sse';

/** A chat request that failed: HTTP status (0 when none: network, or inside the stream). */
export class ChatError extends Error {
  readonly status: number;
  readonly type: string;

  constructor(message: string, status: number, type: string) {
    super(message);
    this.name = 'ChatError';
    this.status = status;
    this.type = type;
  }
}

/** What one `data:` event of an OpenAI chat stream says. */
export type ChatData =
  | { kind: 'done' }
  | { kind: 'error'; message: string; type: string; code: number | string | null }
  | { kind: 'chunk'; content: string; finishReason: string | null; timings: ChatTimings | null }
  | { kind: 'invalid'; reason: string };

type Dict = Record<string, unknown>;
const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v);

function errorOf(body: unknown): { message: string; type: string; code: number | string | null } | null {
  if (!isDict(body) || !('error' in body)) return null;
  const err = body.error;
  if (typeof err === 'string') return { message: err, type: 'error', code: null };
  if (!isDict(err)) return null;
  const message = typeof err.message === 'string' && err.message ? err.message : JSON.stringify(err);
  const code = typeof err.code === 'number' || typeof err.code === 'string' ? err.code : null;
  return { message, type: typeof err.type === 'string' ? err.type : 'error', code };
}

function timingsOf(raw: unknown): ChatTimings | null {
  if (!isDict(raw)) return null;
  const out: ChatTimings = {};
  for (const key of [
    'predicted_n',
    'predicted_ms',
    'predicted_per_second',
    'prompt_n',
    'prompt_ms',
    'prompt_per_second',
    'cache_n',
  ] as const) {
    const value = raw[key];
    if (typeof value === 'number' && Number.isFinite(value)) out[key] = value;
  }
  return out;
}

/** Read the `data` of one stream event: a chunk, `[DONE]`, or an error. */
export function readChatData(data: string): ChatData {
  if (data.trim() === '[DONE]') return { kind: 'done' };
  let body: unknown;
  try {
    body = JSON.parse(data);
  } catch {
    return { kind: 'invalid', reason: `not JSON: ${data.slice(0, 80)}` };
  }
  const error = errorOf(body);
  if (error) return { kind: 'error', ...error };
  if (!isDict(body)) return { kind: 'invalid', reason: 'not a JSON object' };
  const choice = Array.isArray(body.choices) && isDict(body.choices[0]) ? body.choices[0] : null;
  const delta = choice && isDict(choice.delta) ? choice.delta : null;
  const message = choice && isDict(choice.message) ? choice.message : null;
  const content = delta?.content ?? message?.content;
  return {
    kind: 'chunk',
    content: typeof content === 'string' ? content : '',
    finishReason: choice && typeof choice.finish_reason === 'string' ? choice.finish_reason : null,
    timings: timingsOf(body.timings),
  };
}

/**
 * The status hint in an SSE comment (`: llamaherd: loading coder, 3.1 s`), without the
 * `llamaherd:` prefix; null for an empty comment (a bare keep-alive).
 */
export function hintOf(comment: string): string | null {
  const text = comment.replace(/^llamaherd:\s*/, '').trim();
  return text === '' ? null : text;
}

export type ChatUpdate =
  | { kind: 'hint'; text: string }
  | { kind: 'token'; content: string }
  | { kind: 'timings'; timings: ChatTimings };

export interface ChatRequest {
  model: string;
  messages: ChatMessage[];
  maxTokens?: number;
  signal?: AbortSignal;
  fetchImpl?: FetchLike;
}

export interface ChatOutcome {
  content: string;
  /** Content chunks received (about one token each). */
  chunks: number;
  /** llama-server's figures from the last chunk; null when it sent none. */
  timings: ChatTimings | null;
  finishReason: string | null;
}

async function errorFromResponse(response: Response, sentKey: string | null): Promise<ChatError> {
  const text = await response.text().catch(() => '');
  let body: unknown = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  const error = errorOf(body);
  const refusal = httpAuthProblem(response.status, error, sentKey);
  if (refusal) apiKeyStore.refused(refusal, sentKey);
  if (error) return new ChatError(error.message, response.status, error.type);
  const detail = response.statusText || text.slice(0, 200) || 'request failed';
  return new ChatError(`HTTP ${response.status}: ${detail}`, response.status, 'http');
}

/**
 * `POST /v1/chat/completions` with `stream: true` and the tab's API key (a refused key is
 * reported to the key store), read with a stream reader: every token,
 * hint and the final timings go to `onUpdate` as they arrive. Resolves at `[DONE]`; rejects
 * with a {@link ChatError} for an HTTP error (its body's message), an error event inside the
 * stream, a network failure or a stream cut short, and with the fetch's own AbortError when
 * `signal` aborts (which closes the connection: llamaherd then frees the server's slot).
 */
export async function streamChat(request: ChatRequest, onUpdate: (update: ChatUpdate) => void): Promise<ChatOutcome> {
  const doFetch: FetchLike = request.fetchImpl ?? ((input, init) => globalThis.fetch(input, init));
  const body: Record<string, unknown> = { model: request.model, messages: request.messages, stream: true };
  if (request.maxTokens !== undefined) body.max_tokens = request.maxTokens;
  // An inference call needs the tab's key as much as the REST calls do.
  const key = apiKeyStore.key;
  let response: Response;
  try {
    response = await doFetch(CHAT_COMPLETIONS_PATH, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream', ...authorizationHeader(key) },
      body: JSON.stringify(body),
      signal: request.signal,
    });
  } catch (err) {
    if (request.signal?.aborted) throw err;
    const reason = err instanceof Error ? err.message : String(err);
    throw new ChatError(`Cannot reach llamaherd: ${reason}`, 0, 'network');
  }
  if (!response.ok) throw await errorFromResponse(response, key);
  if (!response.body) throw new ChatError('llamaherd answered with no body', response.status, 'invalid_response');

  const outcome: ChatOutcome = { content: '', chunks: 0, timings: null, finishReason: null };
  const reader = response.body.getReader();
  let state: SseState = SSE_START;
  try {
    for (;;) {
      let read: ReadableStreamReadResult<Uint8Array>;
      try {
        read = await reader.read();
      } catch (err) {
        if (request.signal?.aborted) throw err;
        const reason = err instanceof Error ? err.message : String(err);
        throw new ChatError(`The stream broke off: ${reason}`, 0, 'network');
      }
      if (read.done) break;
      const parsed = parseSse(state, read.value);
      state = parsed.state;
      for (const event of parsed.events) {
        if (event.kind === 'comment') {
          const hint = hintOf(event.text);
          if (hint !== null) onUpdate({ kind: 'hint', text: hint });
          continue;
        }
        const data = readChatData(event.data);
        if (data.kind === 'done') return outcome;
        if (data.kind === 'error') throw new ChatError(data.message, 0, data.type);
        if (data.kind === 'invalid') throw new ChatError(`llamaherd sent an unreadable event (${data.reason})`, 0, 'invalid_response');
        if (data.content) {
          outcome.content += data.content;
          outcome.chunks += 1;
          onUpdate({ kind: 'token', content: data.content });
        }
        if (data.finishReason) outcome.finishReason = data.finishReason;
        if (data.timings && Object.keys(data.timings).length > 0) {
          outcome.timings = data.timings;
          onUpdate({ kind: 'timings', timings: data.timings });
        }
      }
    }
  } finally {
    // Whatever ended the loop, let go of the connection (a no-op once the stream is done).
    reader.cancel().catch(() => {});
  }
  throw new ChatError('The stream ended before the answer was complete', 0, 'incomplete');
}
