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
const listCalls = (fetchImpl: ReturnType<typeof vi.fn>) =>
  fetchImpl.mock.calls.filter(([url]) => url === '/api/models/pulls').length;
const MiB = 1024 * 1024;

describe('usePulls', () => {
  it('lists the pulls once connected, and again at every reconnect', async () => {
    const { socket, fetchImpl, result } = setup(() => listOf(pullFixture({ bytes: 40 * MiB })));
    await waitFor(() => expect(result.current.pulls.map((p) => p.id)).toEqual(['p1']));
    act(() => {
      socket.serverDisconnect();
      socket.serverConnect();
    });
    await waitFor(() => expect(listCalls(fetchImpl)).toBe(2));
  });

  it('asks for nothing before it is connected', () => {
    const { fetchImpl } = setup(() => listOf(), false);
    expect(fetchImpl).not.toHaveBeenCalled();
  });

  it('merges modelPull events by id, newest pull first', () => {
    const { socket, result } = setup(() => listOf());
    act(() => socket.serverEmit('modelPull', pullFixture()));
    act(() => socket.serverEmit('modelPull', pullFixture({ bytes: 24 * MiB })));
    expect(result.current.pulls).toHaveLength(1);
    expect(result.current.pulls[0]?.bytes).toBe(24 * MiB);

    const later = pullFixture({ id: 'p2', source: 'acme/big-GGUF:Q8_0', startedAt: pullFixture().startedAt + 60 });
    act(() => socket.serverEmit('modelPull', later));
    expect(result.current.pulls.map((p) => p.id)).toEqual(['p2', 'p1']);

    act(() => socket.serverEmit('modelPull', pullFixture({ state: 'done', bytes: 48 * MiB })));
    expect(result.current.pulls.find((p) => p.id === 'p1')?.state).toBe('done');
    // Garbage changes nothing.
    act(() => socket.serverEmit('modelPull', { state: 'done' }));
    expect(result.current.pulls).toHaveLength(2);
  });

  it('lists the pulls again after a reconnect', async () => {
    const finished = pullFixture({ id: 'p0', state: 'done', startedAt: 1 });
    const { socket, fetchImpl, result } = setup(() => listOf(finished, pullFixture({ bytes: 40 * MiB })));
    act(() => socket.serverEmit('modelPull', pullFixture()));
    act(() => {
      socket.serverDisconnect();
      socket.serverConnect();
    });
    await waitFor(() => expect(result.current.pulls.map((p) => p.id)).toEqual(['p1', 'p0']));
    expect(result.current.pulls[0]?.bytes).toBe(40 * MiB);
    expect(listCalls(fetchImpl)).toBe(2); // at mount, and after the reconnect
  });

  it('keeps the word furthest along when a list fetched earlier lands after an event', async () => {
    let answer: (r: Response) => void = () => {};
    const { socket, result } = setup(() => new Promise<Response>((resolve) => (answer = resolve)));
    act(() => socket.serverEmit('modelPull', pullFixture()));
    act(() => socket.serverConnect());
    // The event of the finished download comes first; the list (older) is answered after.
    act(() => socket.serverEmit('modelPull', pullFixture({ state: 'done', bytes: 48 * MiB })));
    await act(async () => answer(listOf(pullFixture({ bytes: 30 * MiB }))));
    expect(result.current.pulls.map((p) => [p.state, p.bytes])).toEqual([['done', 48 * MiB]]);
  });

  it("keeps the list's error to say", async () => {
    const { socket, result } = setup(() => jsonResponse({ error: { message: 'disk on fire', type: 'internal' } }, 500));
    act(() => socket.serverEmit('modelPull', pullFixture()));
    act(() => socket.serverConnect());
    await waitFor(() => expect(result.current.error).toBe('disk on fire'));
    expect(result.current.pulls).toHaveLength(1);
  });

  it('starts a pull with its source and shows it before any event', async () => {
    const { result, fetchImpl } = setup((url, init) => {
      if (url === '/api/models/pull' && init?.method === 'POST') return jsonResponse(pullFixture({ bytes: 0 }), 202);
      return listOf();
    });
    const pull = await act(() => result.current.start('acme/tiny-GGUF:Q4_K_M'));
    expect(pull.id).toBe('p1');
    expect(result.current.pulls.map((p) => p.id)).toEqual(['p1']);
    const [, init] = fetchImpl.mock.calls.find(([url]) => url === '/api/models/pull') ?? [];
    expect(JSON.parse(String(init?.body))).toEqual({ source: 'acme/tiny-GGUF:Q4_K_M' });
    expect(new Headers(init?.headers).get('Content-Type')).toBe('application/json');
  });

  it("rejects a refused pull with llamaherd's message", async () => {
    const message = 'Q4 matches several files: tiny-Q4_0.gguf, tiny-Q4_K_M.gguf';
    const { result } = setup(() =>
      jsonResponse({ error: { message, type: 'pull_error', code: 'ambiguous_quant' } }, 409),
    );
    const refusal = await result.current.start('acme/tiny-GGUF:Q4').catch((err: unknown) => err);
    expect(refusal).toBeInstanceOf(ApiError);
    expect(refusal).toMatchObject({ status: 409, message });
    expect(result.current.pulls).toEqual([]);
  });

  it('cancels a pull and takes in the answer', async () => {
    const { socket, result, fetchImpl } = setup(() => jsonResponse(pullFixture({ state: 'cancelled' })));
    act(() => socket.serverEmit('modelPull', pullFixture()));
    await act(() => result.current.cancel('p1'));
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/pulls/p1', expect.objectContaining({ method: 'DELETE' }));
    expect(result.current.pulls[0]?.state).toBe('cancelled');
  });

  it('stops listening when unmounted', () => {
    const { socket, unmount } = setup(() => listOf());
    unmount();
    expect(socket.listenerCount('modelPull')).toBe(0);
    expect(socket.listenerCount('connect')).toBe(0);
  });
});
