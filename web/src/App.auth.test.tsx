import { act, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import App from './App';
import { API_KEY_STORAGE_KEY, apiKeyStore } from './lib/apiKey';
import { FakeSocket } from './test/fakeSocket';
import { jsonResponse, statusEvent } from './test/fixtures';

const ADMIN_KEY = 'admin-key-0123456789';
const APP_KEY = 'app-key-0123456789ab';
const MISSING = 'This llamaherd requires an API key: send Authorization: Bearer KEY.';
const UNKNOWN = 'Unknown API key.';
const SCOPE = "The API key 'app' may not use /api/llama/logs: it needs the admin scope.";

/**
 * llamaherd with keys configured: `/healthz` is open, every `/api/*` call needs the admin
 * key. `requireKeys: false` is llamaherd without keys.
 */
function keyedServer({ requireKeys = true } = {}) {
  const socket = new FakeSocket();
  const fetchImpl = vi.fn(async (url: string, init?: RequestInit) => {
    if (url === '/healthz') return jsonResponse({ status: 'ok', name: 'llamaherd', version: '0.1.0' });
    const auth = new Headers(init?.headers).get('authorization');
    if (requireKeys && auth === null) {
      return jsonResponse({ error: { message: MISSING, type: 'invalid_request_error', code: 'missing_api_key' } }, 401);
    }
    if (requireKeys && auth === `Bearer ${APP_KEY}`) {
      return jsonResponse({ error: { message: SCOPE, type: 'permission_error', code: 'insufficient_scope' } }, 403);
    }
    if (requireKeys && auth !== `Bearer ${ADMIN_KEY}`) {
      return jsonResponse({ error: { message: UNKNOWN, type: 'invalid_request_error', code: 'invalid_api_key' } }, 401);
    }
    if (url.startsWith('/api/llama/logs')) return jsonResponse({ lines: ['llama-server: listening'] });
    if (url === '/api/status') return jsonResponse({ status: 'ready' });
    return jsonResponse({ error: { message: 'not found', type: 'not_found' } }, 404);
  });
  /** The Authorization header of every call to `path`, in order (null: none). */
  const keysSentTo = (path: string) =>
    fetchImpl.mock.calls
      .filter(([url]) => url.startsWith(path))
      .map(([, init]) => new Headers(init?.headers).get('authorization'));
  return { socket, fetchImpl, keysSentTo };
}

async function useKey(user: ReturnType<typeof userEvent.setup>, key: string) {
  const input = screen.getByTestId('api-key-input');
  await user.clear(input);
  await user.type(input, key);
  await user.click(screen.getByTestId('api-key-submit'));
}

describe('App with API keys', () => {
  it('asks for a key after a 401, says why a wrong one is refused, and loads again with the right one', async () => {
    const user = userEvent.setup();
    const { socket, fetchImpl, keysSentTo } = keyedServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);

    expect(await screen.findByTestId('api-key-dialog')).toBeInTheDocument();
    // No key was sent: nothing wrong to show yet, and the page does not call llamaherd unreachable.
    expect(screen.queryByTestId('api-key-error')).not.toBeInTheDocument();
    expect(screen.getByTestId('connection-state')).toHaveTextContent('key needed');
    expect(screen.queryByTestId('forget-key')).not.toBeInTheDocument();

    await useKey(user, 'wrong-key-000000000000');
    expect(await screen.findByTestId('api-key-error')).toHaveTextContent(UNKNOWN);
    expect(sessionStorage.getItem(API_KEY_STORAGE_KEY)).toBeNull();

    await useKey(user, ADMIN_KEY);
    await waitFor(() => expect(screen.queryByTestId('api-key-dialog')).not.toBeInTheDocument());
    expect(sessionStorage.getItem(API_KEY_STORAGE_KEY)).toBe(ADMIN_KEY);
    expect(localStorage.length).toBe(0);

    // The logs tail is fetched again, with the key, and shown.
    expect(await screen.findByText('llama-server: listening')).toBeInTheDocument();
    expect(keysSentTo('/api/llama/logs')).toEqual([null, `Bearer ${ADMIN_KEY}`]);
    // A new socket handshake, carrying the key (the factory reads it at each connect).
    expect(socket.connectCalls).toBe(2);
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaStatus', statusEvent());
    });
    expect(screen.getByTestId('status-badge')).toHaveTextContent(/^ready$/);
    expect(screen.getByTestId('connection-state')).toHaveTextContent('live');
    expect(screen.getByTestId('forget-key')).toBeInTheDocument();
    for (const [url] of fetchImpl.mock.calls) expect(url).not.toContain(ADMIN_KEY);
  });

  it("shows llamaherd's scope sentence for a key without the admin scope, and keeps asking", async () => {
    const user = userEvent.setup();
    const { socket, fetchImpl } = keyedServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    await screen.findByTestId('api-key-dialog');

    await useKey(user, APP_KEY);
    expect(await screen.findByTestId('api-key-error')).toHaveTextContent(SCOPE);
    expect(screen.getByTestId('api-key-dialog')).toBeInTheDocument();
    expect(sessionStorage.getItem(API_KEY_STORAGE_KEY)).toBeNull();
  });

  it('asks for a key when the socket handshake is refused for it, without the unreachable banner', async () => {
    const { socket, fetchImpl } = keyedServer({ requireKeys: false });
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => {
      socket.active = false;
      socket.connectError('This llamaherd requires an API key.');
    });
    expect(await screen.findByTestId('api-key-dialog')).toBeInTheDocument();
    expect(screen.queryByTestId('unreachable-banner')).not.toBeInTheDocument();
  });

  it("uses the tab's kept key at once, and asks again once it is forgotten", async () => {
    const user = userEvent.setup();
    apiKeyStore.use(ADMIN_KEY);
    const { socket, fetchImpl, keysSentTo } = keyedServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    expect(await screen.findByText('llama-server: listening')).toBeInTheDocument();
    expect(keysSentTo('/api/llama/logs')).toEqual([`Bearer ${ADMIN_KEY}`]);
    expect(screen.queryByTestId('api-key-dialog')).not.toBeInTheDocument();

    await user.click(screen.getByTestId('forget-key'));
    expect(sessionStorage.getItem(API_KEY_STORAGE_KEY)).toBeNull();
    expect(await screen.findByTestId('api-key-dialog')).toBeInTheDocument();
    expect(keysSentTo('/api/llama/logs')).toEqual([`Bearer ${ADMIN_KEY}`, null]);
    expect(screen.queryByTestId('forget-key')).not.toBeInTheDocument();
  });

  it('never asks when llamaherd has no keys', async () => {
    const { socket, fetchImpl, keysSentTo } = keyedServer({ requireKeys: false });
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaStatus', statusEvent());
    });
    expect(await screen.findByText('llama-server: listening')).toBeInTheDocument();
    expect(keysSentTo('/api/llama/logs')).toEqual([null]);
    expect(screen.queryByTestId('api-key-dialog')).not.toBeInTheDocument();
    expect(screen.queryByTestId('forget-key')).not.toBeInTheDocument();
    expect(screen.getByTestId('connection-state')).toHaveTextContent('live');
  });
});
