import { describe, expect, it, vi } from 'vitest';
import {
  API_KEY_STORAGE_KEY,
  ApiKeyStore,
  authorizationHeader,
  httpAuthProblem,
  socketAuthProblem,
  type AuthProblem,
} from './apiKey';

const ADMIN_KEY = 'admin-key-0123456789';
const MISSING: AuthProblem = { code: 'missing_api_key', message: 'This llamaherd requires an API key.' };

/** A Storage that throws on every use, as a sandboxed frame's does. */
const brokenStorage = {
  getItem: () => {
    throw new DOMException('denied', 'SecurityError');
  },
  setItem: () => {
    throw new DOMException('denied', 'SecurityError');
  },
  removeItem: () => {
    throw new DOMException('denied', 'SecurityError');
  },
} as unknown as Storage;

describe('ApiKeyStore', () => {
  it('keeps the key in sessionStorage only, and reads it back in a new page of the same tab', () => {
    const store = new ApiKeyStore(sessionStorage);
    expect(store.key).toBeNull();
    store.use(`  ${ADMIN_KEY} `);
    expect(store.key).toBe(ADMIN_KEY);
    expect(sessionStorage.getItem(API_KEY_STORAGE_KEY)).toBe(ADMIN_KEY);
    expect(localStorage.length).toBe(0);

    // A reload: a new store reads what the tab kept.
    expect(new ApiKeyStore(sessionStorage).key).toBe(ADMIN_KEY);

    store.forget();
    expect(store.key).toBeNull();
    expect(sessionStorage.getItem(API_KEY_STORAGE_KEY)).toBeNull();
    expect(new ApiKeyStore(sessionStorage).key).toBeNull();
  });

  it('refuses to keep an empty key', () => {
    const store = new ApiKeyStore(sessionStorage);
    expect(() => store.use('   ')).toThrow();
    expect(store.key).toBeNull();
    expect(sessionStorage.length).toBe(0);
  });

  it('tells its listeners of every change, and counts the keys used and forgotten', () => {
    const store = new ApiKeyStore(sessionStorage);
    const listener = vi.fn();
    const unsubscribe = store.subscribe(listener);
    const first = store.snapshot();
    expect(first).toEqual({ key: null, problem: null, generation: 0 });
    // Unchanged: the same object, so React does not render again.
    expect(store.snapshot()).toBe(first);

    store.refused(MISSING, null);
    expect(store.snapshot()).toEqual({ key: null, problem: MISSING, generation: 0 });
    store.use(ADMIN_KEY);
    expect(store.snapshot()).toEqual({ key: ADMIN_KEY, problem: null, generation: 1 });
    store.forget();
    expect(store.snapshot()).toEqual({ key: null, problem: null, generation: 2 });
    expect(listener).toHaveBeenCalledTimes(3);

    unsubscribe();
    store.use(ADMIN_KEY);
    expect(listener).toHaveBeenCalledTimes(3);
  });

  it("ignores a refusal of a key that is no longer the tab's, and repeats of the standing one", () => {
    const store = new ApiKeyStore(sessionStorage);
    const listener = vi.fn();
    store.subscribe(listener);
    store.use(ADMIN_KEY);
    listener.mockClear();

    // A call made before the key was set comes back refused: old news.
    store.refused(MISSING, null);
    expect(store.snapshot().problem).toBeNull();
    expect(listener).not.toHaveBeenCalled();

    const revoked: AuthProblem = { code: 'invalid_api_key', message: 'Unknown API key.' };
    store.refused(revoked, ADMIN_KEY);
    store.refused({ ...revoked }, ADMIN_KEY);
    expect(store.snapshot().problem).toEqual(revoked);
    expect(listener).toHaveBeenCalledTimes(1);
  });

  it('still holds a key for the page when the storage refuses to be used', () => {
    const store = new ApiKeyStore(brokenStorage);
    expect(store.key).toBeNull();
    store.use(ADMIN_KEY);
    expect(store.key).toBe(ADMIN_KEY);
    store.forget();
    expect(store.key).toBeNull();
    expect(new ApiKeyStore(null).key).toBeNull();
  });
});

describe('authorizationHeader', () => {
  it('is a Bearer header with a key, and nothing without', () => {
    expect(authorizationHeader(ADMIN_KEY)).toEqual({ Authorization: `Bearer ${ADMIN_KEY}` });
    expect(authorizationHeader(null)).toEqual({});
  });
});

describe('httpAuthProblem', () => {
  it("reads llamaherd's three refusals with their sentences", () => {
    const missing = { message: 'An API key is required: send Authorization: Bearer KEY.', type: 'invalid_request_error', code: 'missing_api_key' };
    expect(httpAuthProblem(401, missing, null)).toEqual({ code: 'missing_api_key', message: missing.message });
    const invalid = { message: 'Unknown API key.', type: 'invalid_request_error', code: 'invalid_api_key' };
    expect(httpAuthProblem(401, invalid, 'nope')).toEqual({ code: 'invalid_api_key', message: 'Unknown API key.' });
    const scope = { message: "The key 'app' lacks the admin scope.", type: 'permission_error', code: 'insufficient_scope' };
    expect(httpAuthProblem(403, scope, 'app-key')).toEqual({ code: 'insufficient_scope', message: scope.message });
  });

  it('takes a 401 without a known code for a missing or an unknown key, by whether one was sent', () => {
    expect(httpAuthProblem(401, null, null)).toMatchObject({ code: 'missing_api_key' });
    expect(httpAuthProblem(401, { message: 'Unauthorized' }, 'k')).toEqual({ code: 'invalid_api_key', message: 'Unauthorized' });
    expect(httpAuthProblem(401, { message: '' }, 'k')?.message).not.toBe('');
  });

  it("leaves other answers alone, llamaherd's other 403s included", () => {
    expect(httpAuthProblem(200, null, null)).toBeNull();
    expect(httpAuthProblem(404, { message: 'not found', type: 'not_found' }, null)).toBeNull();
    expect(httpAuthProblem(403, { message: "Host 'evil.example' is not a loopback name", type: 'forbidden' }, null)).toBeNull();
    expect(httpAuthProblem(403, null, 'k')).toBeNull();
  });

  it("leaves alone a refusal whose code is about something else (a gated repository's)", () => {
    const gated = { message: 'acme/secret-GGUF is gated: accept its terms on huggingface.co', type: 'permission_error', code: 'gated_repo' };
    expect(httpAuthProblem(401, gated, 'k')).toBeNull();
    expect(httpAuthProblem(403, gated, 'k')).toBeNull();
  });
});

describe('socketAuthProblem', () => {
  const refusal = (message: string, data?: unknown) => Object.assign(new Error(message), data === undefined ? {} : { data });

  it('reads a refused handshake that is about the key', () => {
    expect(socketAuthProblem(refusal('An API key is required.'), false, null)).toEqual({
      code: 'missing_api_key',
      message: 'An API key is required.',
    });
    expect(socketAuthProblem(refusal('Unknown API key.'), false, 'nope')).toMatchObject({ code: 'invalid_api_key' });
    expect(socketAuthProblem(refusal("The key 'app' lacks the admin scope."), false, 'app')).toMatchObject({
      code: 'insufficient_scope',
    });
    // A code the server sends wins over the guess from the sentence.
    expect(socketAuthProblem(refusal('Refused.', { code: 'invalid_api_key' }), false, 'k')).toEqual({
      code: 'invalid_api_key',
      message: 'Refused.',
    });
  });

  it('leaves transport errors and other refusals alone', () => {
    // Still active: socket.io is retrying a lost transport by itself.
    expect(socketAuthProblem(refusal('xhr poll error'), true, null)).toBeNull();
    expect(socketAuthProblem(refusal('An API key is required.'), true, null)).toBeNull();
    expect(socketAuthProblem(refusal("Origin 'http://evil.example' is not allowed"), false, null)).toBeNull();
    expect(socketAuthProblem('An API key is required.', false, null)).toBeNull();
  });
});
