import { act, renderHook, waitFor } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { ApiError } from '../api/client';
import { FakeSocket } from '../test/fakeSocket';
import { jsonResponse, pullFixture } from '../test/fixtures';
import { usePulls } from './usePulls';

type Handler = (url: string, init?: RequestInit) => Response | Promise<Response>;

function setup(handler: Handler, connected = true) {
  const socket = new FakeSocket();
  socket.connected = connected;
  const fetchImpl = vi.fn(async (url: string, init?: RequestInit) => handler(url, init));
  const hook = renderHook(() => usePulls({ socket, fetchImpl }));
  return { socket, fetchImpl, ...hook };
}

const listOf = (...pulls: unknown[]) => jsonResponse({ pulls });
const MiB = 1024 * 1024;

describe('usePulls', () => {
  it('lists the pulls at once when connected, and again after every reconnect', async () => {
    const { socket, fetchImpl, result } = setup(() => listOf(pullFixture()), false);
    expect(fetchImpl).not.toHaveBeenCalled();
    expect(result.current.available).toBeNull();

    act(() => socket.serverConnect());
    await waitFor(() => expect(result.current.pulls.map((p) => p.id)).toEqual(['p1']));
    expect(result.current.available).toBe(true);
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/pulls', expect.anything());

    act(() => {
      socket.serverDisconnect();
      socket.serverConnect();
    });
    await waitFor(() => expect(fetchImpl).toHaveBeenCalledTimes(2));
  });

  it('merges modelPull events by id, newest pull first', async () => {
    const { socket, result } = setup(() => listOf(pullFixture()));
    await waitFor(() => expect(result.current.available).toBe(true));

    act(() => socket.serverEmit('modelPull', pullFixture({ bytes: 24 * MiB })));
    expect(result.current.pulls).toHaveLength(1);
    expect(result.current.pulls[0]?.bytes).toBe(24 * MiB);

    const later = pullFixture({ id: 'p2', source: 'acme/big-GGUF:Q8_0', startedAt: Date.parse('2025-12-26T11:05:00Z') });
    act(() => socket.serverEmit('modelPull', later));
    expect(result.current.pulls.map((p) => p.id)).toEqual(['p2', 'p1']);

    act(() => socket.serverEmit('modelPull', pullFixture({ state: 'done', bytes: 48 * MiB })));
    expect(result.current.pulls.find((p) => p.id === 'p1')?.state).toBe('done');
    // Garbage changes nothing.
    act(() => socket.serverEmit('modelPull', { state: 'done' }));
    expect(result.current.pulls).toHaveLength(2);
  });

  it('keeps the word furthest along when a list that was fetched earlier lands after an event', async () => {
    let answer: (r: Response) => void = () => {};
    const { socket, result } = setup(() => new Promise<Response>((resolve) => (answer = resolve)));
    // The event of the finished download comes first; the list (older) is answered after.
    act(() => socket.serverEmit('modelPull', pullFixture({ state: 'done', bytes: 48 * MiB })));
    await act(async () => answer(listOf(pullFixture({ bytes: 30 * MiB }))));
    await waitFor(() => expect(result.current.available).toBe(true));
    expect(result.current.pulls.map((p) => [p.state, p.bytes])).toEqual([['done', 48 * MiB]]);
  });

  it('says a llamaherd that answers 404 does not pull, and keeps other errors', async () => {
    const old = setup(() => jsonResponse({ error: { message: 'Not Found', type: 'not_found' } }, 404));
    await waitFor(() => expect(old.result.current.available).toBe(false));
    expect(old.result.current.error).toBeNull();

    const broken = setup(() => jsonResponse({ error: { message: 'disk on fire', type: 'internal' } }, 500));
    await waitFor(() => expect(broken.result.current.error).toBe('disk on fire'));
    expect(broken.result.current.available).toBeNull();
  });

  it('starts a pull with its source and shows it before any event', async () => {
    const { result, fetchImpl } = setup((url, init) => {
      if (url === '/api/models/pull' && init?.method === 'POST') return jsonResponse(pullFixture({ bytes: 0 }), 202);
      return listOf();
    });
    await waitFor(() => expect(result.current.available).toBe(true));
    const pull = await act(() => result.current.start('acme/tiny-GGUF:Q4_K_M'));
    expect(pull.id).toBe('p1');
    expect(result.current.pulls.map((p) => p.id)).toEqual(['p1']);
    const [, init] = fetchImpl.mock.calls.find(([url]) => url === '/api/models/pull') ?? [];
    expect(JSON.parse(String(init?.body))).toEqual({ source: 'acme/tiny-GGUF:Q4_K_M' });
    expect(new Headers(init?.headers).get('Content-Type')).toBe('application/json');
  });

  it("rejects a refused pull with llamaherd's message", async () => {
    const message = 'Q4 matches several files: tiny-Q4_0.gguf, tiny-Q4_K_M.gguf';
    const { result } = setup((url) =>
      url === '/api/models/pull'
        ? jsonResponse({ error: { message, type: 'invalid_request_error', code: 'ambiguous_tag' } }, 409)
        : listOf(),
    );
    await waitFor(() => expect(result.current.available).toBe(true));
    const refusal = await result.current.start('acme/tiny-GGUF:Q4').catch((err: unknown) => err);
    expect(refusal).toBeInstanceOf(ApiError);
    expect(refusal).toMatchObject({ status: 409, message });
    expect(result.current.pulls).toEqual([]);
  });

  it('cancels a pull and takes in the answer', async () => {
    const { result, fetchImpl } = setup((_url, init) =>
      init?.method === 'DELETE' ? jsonResponse(pullFixture({ state: 'cancelled' })) : listOf(pullFixture()),
    );
    await waitFor(() => expect(result.current.pulls).toHaveLength(1));
    await act(() => result.current.cancel('p1'));
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/pulls/p1', expect.objectContaining({ method: 'DELETE' }));
    expect(result.current.pulls[0]?.state).toBe('cancelled');
  });

  it('stops listening when unmounted', async () => {
    const { socket, unmount, result } = setup(() => listOf());
    await waitFor(() => expect(result.current.available).toBe(true));
    unmount();
    expect(socket.listenerCount('modelPull')).toBe(0);
    expect(socket.listenerCount('connect')).toBe(0);
  });
});
