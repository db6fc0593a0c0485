import { describe, expect, it, vi } from 'vitest';
import { apiKeyStore } from '../lib/apiKey';
import { jsonResponse } from '../test/fixtures';
import { ApiError, checkApiKey, controlLlama, getLogs, modelPath, removeModel, startPull } from './client';

const ADMIN_KEY = 'admin-key-0123456789';
const APP_KEY = 'app-key-0123456789ab';

const SCOPE_BODY = {
  error: { message: "The API key 'app' may not use /api/status: it needs the admin scope.", type: 'permission_error', code: 'insufficient_scope' },
};
const INVALID_BODY = { error: { message: 'Unknown API key.', type: 'invalid_request_error', code: 'invalid_api_key' } };
const MISSING_BODY = {
  error: { message: 'This llamaherd requires an API key: send Authorization: Bearer KEY.', type: 'invalid_request_error', code: 'missing_api_key' },
};

/** The headers a fetch was called with, as a plain object. */
function headersOf(fetchImpl: ReturnType<typeof vi.fn>, call = 0): Record<string, string> {
  const init = fetchImpl.mock.calls[call]?.[1] as RequestInit | undefined;
  return Object.fromEntries(new Headers(init?.headers).entries());
}

describe('the REST client and the API key', () => {
  it('sends no Authorization header while the tab has no key', async () => {
    const fetchImpl = vi.fn(async () => jsonResponse({ lines: ['a'] }));
    await expect(getLogs(5, fetchImpl)).resolves.toEqual(['a']);
    expect(headersOf(fetchImpl)).toEqual({ accept: 'application/json' });
  });

  it("sends the tab's key as a Bearer header on every call", async () => {
    apiKeyStore.use(ADMIN_KEY);
    const fetchImpl = vi.fn(async (url: string) =>
      url.startsWith('/api/llama/logs') ? jsonResponse({ lines: [] }) : jsonResponse({ status: {} }),
    );
    await getLogs(5, fetchImpl);
    await controlLlama('restart', fetchImpl);
    expect(headersOf(fetchImpl, 0).authorization).toBe(`Bearer ${ADMIN_KEY}`);
    expect(headersOf(fetchImpl, 1).authorization).toBe(`Bearer ${ADMIN_KEY}`);
    // In a header only: never in the address.
    for (const [url] of fetchImpl.mock.calls) expect(url).not.toContain(ADMIN_KEY);
  });

  it("reports a refusal to the key store, with llamaherd's sentence and code", async () => {
    const fetchImpl = vi.fn(async () => jsonResponse(MISSING_BODY, 401));
    const error = await getLogs(5, fetchImpl).catch((e: unknown) => e);
    expect(error).toBeInstanceOf(ApiError);
    expect(error).toMatchObject({ status: 401, code: 'missing_api_key', message: MISSING_BODY.error.message });
    expect(apiKeyStore.snapshot().problem).toEqual({ code: 'missing_api_key', message: MISSING_BODY.error.message });
  });

  it('reports no refusal for an error that is not about the key', async () => {
    const fetchImpl = vi.fn(async () => jsonResponse({ error: { message: "Host 'x' is not a loopback name", type: 'forbidden' } }, 403));
    await expect(getLogs(5, fetchImpl)).rejects.toMatchObject({ status: 403, code: null });
    expect(apiKeyStore.snapshot().problem).toBeNull();
  });

  it('tries a key before it is kept, and says why llamaherd refuses one', async () => {
    const fetchImpl = vi.fn(async (_url: string, init?: RequestInit) => {
      const auth = new Headers(init?.headers).get('authorization');
      if (auth === `Bearer ${ADMIN_KEY}`) return jsonResponse({ status: 'ready' });
      if (auth === `Bearer ${APP_KEY}`) return jsonResponse(SCOPE_BODY, 403);
      return jsonResponse(INVALID_BODY, 401);
    });
    await expect(checkApiKey(ADMIN_KEY, fetchImpl)).resolves.toBeUndefined();
    expect(fetchImpl.mock.calls[0]?.[0]).toBe('/api/status');
    await expect(checkApiKey(APP_KEY, fetchImpl)).rejects.toMatchObject({
      status: 403,
      code: 'insufficient_scope',
      message: SCOPE_BODY.error.message,
    });
    await expect(checkApiKey('wrong-key-000000000', fetchImpl)).rejects.toMatchObject({ status: 401, message: 'Unknown API key.' });
    // Trying keys keeps none and is no refusal of the tab's own (absent) key.
    expect(apiKeyStore.snapshot()).toMatchObject({ key: null, problem: null });
  });
});

describe("a model's routes", () => {
  it('are /api/models/{id}/..., escaped, and the seed routes for the primary', () => {
    expect(modelPath(null, 'restart')).toBe('/api/llama/restart');
    expect(modelPath('beta', 'restart')).toBe('/api/models/beta/restart');
    expect(modelPath('org/m q4', 'logs')).toBe('/api/models/org%2Fm%20q4/logs');
    expect(modelPath('..', 'stop')).toBe('/api/models/%2E%2E/stop');
  });

  it("control and logs reach the model's own routes", async () => {
    const fetchImpl = vi.fn(async () => jsonResponse({ model: 'beta', lines: ['x'] }));
    expect(await getLogs(5, fetchImpl, 'beta')).toEqual(['x']);
    expect(fetchImpl).toHaveBeenLastCalledWith('/api/models/beta/logs?lines=5', expect.anything());
    await controlLlama('restart', fetchImpl, 'beta');
    expect(fetchImpl).toHaveBeenLastCalledWith('/api/models/beta/restart', expect.objectContaining({ method: 'POST' }));
  });
});

describe('pulls and removals', () => {
  it("keeps the dashboard's key when Hugging Face refuses a gated repository (401 with its own code)", async () => {
    apiKeyStore.use(ADMIN_KEY);
    const gated = { error: { message: 'test-org/Secret-GGUF is gated: set HF_TOKEN', type: 'pull_error', code: 'gated' } };
    const fetchImpl = vi.fn(async () => jsonResponse(gated, 401));
    await expect(startPull('test-org/Secret-GGUF', fetchImpl)).rejects.toMatchObject({ status: 401, code: 'gated' });
    expect(apiKeyStore.snapshot().problem).toBeNull();
  });

  it('reads what a removal did, a failed reload after it included', async () => {
    const answer = { model: 'm', files: ['m.gguf'], reloaded: false, error: 'the config is not JSON' };
    const fetchImpl = vi.fn(async () => jsonResponse(answer));
    await expect(removeModel('m', fetchImpl)).resolves.toEqual({ files: ['m.gguf'], reloadError: 'the config is not JSON' });
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/m', expect.objectContaining({ method: 'DELETE' }));
    const noBody = vi.fn(async () => new Response(null, { status: 204 }));
    await expect(removeModel('..', noBody)).resolves.toEqual({ files: [], reloadError: null });
    expect(noBody).toHaveBeenCalledWith('/api/models/%2E%2E', expect.anything());
  });
});
