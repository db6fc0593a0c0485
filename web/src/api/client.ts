import type {
  ApiErrorBody,
  HealthInfo,
  LlamaControlAction,
  LlamaControlResponse,
  LlamaLogsResponse,
} from '../types/llama';
import { apiKeyStore, authorizationHeader, httpAuthProblem } from '../lib/apiKey';
import { parseHistory } from '../lib/history';
import { HISTORY_PATH, type History, type HistoryQuery } from '../types/history';
import { parsePull, parsePulls } from '../lib/pulls';
import { PULL_PATH, PULLS_PATH, type Pull } from '../types/pulls';

export type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

/**
 * A failed REST call: HTTP status (0 for network errors), server error type and message, and
 * the server's error code when it sent one (`invalid_api_key`).
 */
export class ApiError extends Error {
  readonly status: number;
  readonly type: string;
  readonly code: string | null;

  constructor(message: string, status: number, type: string, code: string | null = null) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.type = type;
    this.code = code;
  }
}

function isApiErrorBody(body: unknown): body is ApiErrorBody {
  if (typeof body !== 'object' || body === null || !('error' in body)) return false;
  const err = (body as { error: unknown }).error;
  return typeof err === 'object' && err !== null && 'message' in err;
}

/**
 * Fetch JSON from llamaherd (same origin); throws {@link ApiError} on any failure. Sends the
 * tab's API key (or `key`, to try one before keeping it); a refused key is also reported to
 * the key store, which asks the user for another.
 */
async function requestJson<T>(
  path: string,
  init?: RequestInit,
  fetchImpl?: FetchLike,
  key: string | null = apiKeyStore.key,
): Promise<T> {
  const doFetch: FetchLike = fetchImpl ?? ((input, i) => globalThis.fetch(input, i));
  let response: Response;
  try {
    response = await doFetch(path, {
      ...init,
      headers: { Accept: 'application/json', ...authorizationHeader(key), ...(init?.headers ?? {}) },
    });
  } catch (err) {
    const reason = err instanceof Error ? err.message : String(err);
    throw new ApiError(`Cannot reach llamaherd: ${reason}`, 0, 'network');
  }

  let body: unknown = null;
  const text = await response.text().catch(() => '');
  if (text) {
    try {
      body = JSON.parse(text);
    } catch {
      body = null;
    }
  }

  if (!response.ok) {
    const refusal = httpAuthProblem(response.status, isApiErrorBody(body) ? body.error : null, key);
    if (refusal) apiKeyStore.refused(refusal, key);
    if (isApiErrorBody(body)) {
      const code: unknown = body.error.code;
      throw new ApiError(
        String(body.error.message),
        response.status,
        String(body.error.type ?? 'error'),
        typeof code === 'string' ? code : null,
      );
    }
    const detail = response.statusText || text.slice(0, 200) || 'request failed';
    throw new ApiError(`HTTP ${response.status}: ${detail}`, response.status, 'http');
  }
  if (body === null) {
    throw new ApiError('llamaherd answered with no JSON', response.status, 'invalid_response');
  }
  return body as T;
}

/**
 * Try `key` before keeping it: `GET /api/status` with it, which needs what the dashboard needs
 * (the admin scope). Resolves when llamaherd accepts it; rejects with its {@link ApiError}
 * (401 unknown key, 403 not enough scope) otherwise.
 */
export async function checkApiKey(key: string, fetchImpl?: FetchLike): Promise<void> {
  await requestJson<unknown>('/api/status', undefined, fetchImpl, key);
}

export function getHealth(fetchImpl?: FetchLike): Promise<HealthInfo> {
  return requestJson<HealthInfo>('/healthz', undefined, fetchImpl);
}

/**
 * Where a model's own routes are: `/api/models/{id}/...`, or the seed's `/api/llama/...` of
 * the primary model when `model` is null.
 */
export function modelPath(model: string | null, rest: string): string {
  if (model === null) return `/api/llama/${rest}`;
  return `${modelUrl(model)}/${rest}`;
}

/** `/api/models/{id}`, the id as one path segment. */
function modelUrl(model: string): string {
  const segment = encodeURIComponent(model);
  // "." and ".." would be read as this folder and the one above it.
  return `/api/models/${segment === '.' || segment === '..' ? segment.replace(/\./g, '%2E') : segment}`;
}

/** The tail of the primary model's llama-server output, or of `model`'s. */
export async function getLogs(lines = 200, fetchImpl?: FetchLike, model: string | null = null): Promise<string[]> {
  const body = await requestJson<LlamaLogsResponse>(
    `${modelPath(model, 'logs')}?lines=${encodeURIComponent(String(lines))}`,
    undefined,
    fetchImpl,
  );
  return Array.isArray(body.lines) ? body.lines.map(String) : [];
}

/** `POST /api/llama/{action}`, or `/api/models/{model}/{action}`; resolves with the new status. */
export function controlLlama(
  action: LlamaControlAction,
  fetchImpl?: FetchLike,
  model: string | null = null,
): Promise<LlamaControlResponse> {
  return requestJson<LlamaControlResponse>(modelPath(model, action), { method: 'POST' }, fetchImpl);
}

/** The query string of `GET /api/history`: only the parameters given. */
export function historyUrl(query: HistoryQuery = {}): string {
  const params = new URLSearchParams();
  if (query.model !== undefined) params.set('model', query.model);
  if (query.since !== undefined) params.set('since', String(query.since));
  if (query.until !== undefined) params.set('until', String(query.until));
  if (query.limit !== undefined) params.set('limit', String(query.limit));
  const qs = params.toString();
  return qs ? `${HISTORY_PATH}?${qs}` : HISTORY_PATH;
}

/** `GET /api/history`; an {@link ApiError} with status 404 means history is switched off. */
export async function getHistory(query: HistoryQuery = {}, fetchImpl?: FetchLike, signal?: AbortSignal): Promise<History> {
  const body = await requestJson<unknown>(historyUrl(query), signal ? { signal } : undefined, fetchImpl);
  return parseHistory(body);
}

/** A pull's answer, read; an {@link ApiError} when it is not a pull. */
function pullOf(body: unknown, status = 200): Pull {
  const pull = parsePull(body);
  if (!pull) throw new ApiError('llamaherd answered with something that is not a pull', status, 'invalid_response');
  return pull;
}

/**
 * `POST /api/models/pull`: start downloading `source` (`owner/repo:Q4_K_M`,
 * `owner/repo/file.gguf`). Resolves with the pull (the one already under way, for a file being
 * pulled); rejects with llamaherd's {@link ApiError} (409: the files a tag matches, in its message).
 */
export async function startPull(source: string, fetchImpl?: FetchLike): Promise<Pull> {
  const init: RequestInit = {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ source }),
  };
  return pullOf(await requestJson<unknown>(PULL_PATH, init, fetchImpl));
}

/** `GET /api/models/pulls`: every pull llamaherd knows of; 404 from a llamaherd that cannot pull. */
export async function getPulls(fetchImpl?: FetchLike): Promise<Pull[]> {
  const pulls = parsePulls(await requestJson<unknown>(PULLS_PATH, undefined, fetchImpl));
  if (!pulls) throw new ApiError('llamaherd answered with no list of pulls', 200, 'invalid_response');
  return pulls;
}

/** `DELETE /api/models/pulls/{id}`: stop a download; resolves with the pull, now cancelled. */
export async function cancelPull(id: string, fetchImpl?: FetchLike): Promise<Pull> {
  const path = `${PULLS_PATH}/${encodeURIComponent(id)}`;
  return pullOf(await requestJson<unknown>(path, { method: 'DELETE' }, fetchImpl));
}

/** What `DELETE /api/models/{id}` did: the files deleted, and why the reload after it failed. */
export interface Removal {
  files: string[];
  /** The files are gone but the config reload that follows failed: the model may still be listed. */
  reloadError: string | null;
}

/**
 * `DELETE /api/models/{id}`: delete a pulled model's files. llamaherd refuses (409, with its
 * reason) while the model is loaded or busy; the model leaves the list by a `llamaModels` event.
 */
export async function removeModel(id: string, fetchImpl?: FetchLike): Promise<Removal> {
  let body: unknown = null;
  try {
    body = await requestJson<unknown>(modelUrl(id), { method: 'DELETE' }, fetchImpl);
  } catch (err) {
    // A 204 says it with no body at all; only a refusal is a failure here.
    const emptySuccess = err instanceof ApiError && err.type === 'invalid_response' && err.status < 300;
    if (!emptySuccess) throw err;
  }
  const answer = (typeof body === 'object' && body !== null ? body : {}) as { files?: unknown; reloaded?: unknown; error?: unknown };
  const failedReload = answer.reloaded === false && typeof answer.error === 'string' && answer.error !== '';
  return {
    files: Array.isArray(answer.files) ? answer.files.map(String) : [],
    reloadError: failedReload ? (answer.error as string) : null,
  };
}
