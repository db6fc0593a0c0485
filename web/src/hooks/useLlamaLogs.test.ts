import { act, renderHook, waitFor } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { FakeSocket } from '../test/fakeSocket';
import { jsonResponse, modelLogEvent } from '../test/fixtures';
import { useLlamaLogs } from './useLlamaLogs';

const logEvent = (...lines: string[]) => ({ type: 'llama_log', data: { lines }, timestamp: 1 });

function deferred<T>() {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => {
    resolve = r;
  });
  return { promise, resolve };
}

describe('useLlamaLogs', () => {
  it('loads the tail, then appends live lines', async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi.fn(async () => jsonResponse({ lines: ['a', 'b'] }));
    const { result } = renderHook(() => useLlamaLogs({ socket, fetchImpl }));

    expect(result.current.loading).toBe(true);
    await waitFor(() => expect(result.current.lines).toEqual(['a', 'b']));
    expect(result.current.loading).toBe(false);
    expect(fetchImpl).toHaveBeenCalledWith('/api/llama/logs?lines=200', expect.anything());

    act(() => socket.serverEmit('llamaLog', logEvent('c', 'd')));
    expect(result.current.lines).toEqual(['a', 'b', 'c', 'd']);
  });

  it('keeps lines that arrive before the tail, without duplicates', async () => {
    const socket = new FakeSocket();
    const tail = deferred<Response>();
    const fetchImpl = vi.fn(() => tail.promise);
    const { result } = renderHook(() => useLlamaLogs({ socket, fetchImpl }));

    act(() => socket.serverEmit('llamaLog', logEvent('b', 'c')));
    expect(result.current.lines).toEqual([]);
    await act(async () => tail.resolve(jsonResponse({ lines: ['a', 'b'] })));
    await waitFor(() => expect(result.current.lines).toEqual(['a', 'b', 'c']));
  });

  it('keeps at most maxLines', async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi.fn(async () => jsonResponse({ lines: ['0'] }));
    const { result } = renderHook(() => useLlamaLogs({ socket, fetchImpl, maxLines: 1000 }));
    await waitFor(() => expect(result.current.loading).toBe(false));
    act(() => {
      for (let i = 1; i <= 1500; i += 1) socket.serverEmit('llamaLog', logEvent(String(i)));
    });
    expect(result.current.lines).toHaveLength(1000);
    expect(result.current.lines[0]).toBe('501');
    expect(result.current.lines.at(-1)).toBe('1500');
  });

  it('reports a failed tail but still shows live lines', async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi.fn(async () =>
      jsonResponse({ error: { message: 'no log yet', type: 'not_found' } }, 404),
    );
    const { result } = renderHook(() => useLlamaLogs({ socket, fetchImpl }));
    await waitFor(() => expect(result.current.error).toBe('no log yet'));
    act(() => socket.serverEmit('llamaLog', logEvent('x')));
    expect(result.current.lines).toEqual(['x']);
  });

  it('fetches the tail again after a reconnect and merges it', async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi
      .fn()
      .mockResolvedValueOnce(jsonResponse({ lines: ['a', 'b'] }))
      .mockResolvedValueOnce(jsonResponse({ lines: ['b', 'c', 'd'] }));
    const { result } = renderHook(() => useLlamaLogs({ socket, fetchImpl }));
    await waitFor(() => expect(result.current.lines).toEqual(['a', 'b']));

    act(() => socket.serverConnect()); // the first connect does not refetch
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    act(() => socket.serverDisconnect());
    act(() => socket.serverConnect());
    await waitFor(() => expect(result.current.lines).toEqual(['a', 'b', 'c', 'd']));
    expect(fetchImpl).toHaveBeenCalledTimes(2);
  });

  it('clear() empties the view; unmount removes its listeners', async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi.fn(async () => jsonResponse({ lines: ['a'] }));
    const { result, unmount } = renderHook(() => useLlamaLogs({ socket, fetchImpl }));
    await waitFor(() => expect(result.current.lines).toEqual(['a']));
    act(() => result.current.clear());
    expect(result.current.lines).toEqual([]);
    unmount();
    expect(socket.listenerCount()).toBe(0);
  });

  it('subscribes to logs on mount and after each reconnect, unsubscribes on unmount', async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi.fn(async () => jsonResponse({ lines: [] }));
    const { unmount } = renderHook(() => useLlamaLogs({ socket, fetchImpl }));
    const sent = () => socket.emitted.map((e) => e.event);
    await waitFor(() => expect(fetchImpl).toHaveBeenCalledTimes(1));
    expect(sent()).toEqual(['subscribeLlamaLogs']);

    act(() => socket.serverConnect());
    act(() => socket.serverDisconnect());
    act(() => socket.serverConnect());
    expect(sent()).toEqual(['subscribeLlamaLogs', 'subscribeLlamaLogs']);

    unmount();
    expect(sent()).toEqual(['subscribeLlamaLogs', 'subscribeLlamaLogs', 'unsubscribeLlamaLogs']);
  });
});

describe('useLlamaLogs of a model', () => {
  it("fetches that model's tail, subscribes to its lines and keeps only them", async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi.fn(async () => jsonResponse({ model: 'beta', lines: ['b1'] }));
    const { result, unmount } = renderHook(() => useLlamaLogs({ socket, fetchImpl, model: 'beta' }));
    await waitFor(() => expect(result.current.lines).toEqual(['b1']));
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/beta/logs?lines=200', expect.anything());
    expect(socket.emitted).toEqual([{ event: 'subscribeLlamaLogs', args: [{ model: 'beta' }] }]);

    act(() => socket.serverEmit('llamaLog', modelLogEvent('alpha', 'a2')));
    act(() => socket.serverEmit('llamaLog', modelLogEvent('beta', 'b2')));
    expect(result.current.lines).toEqual(['b1', 'b2']);

    unmount();
    expect(socket.emitted.at(-1)).toEqual({ event: 'unsubscribeLlamaLogs', args: [{ model: 'beta' }] });
  });

  it("switching models empties the view and follows the new one's lines", async () => {
    const socket = new FakeSocket();
    const fetchImpl = vi.fn(async (url: string) =>
      jsonResponse({ lines: [url.includes('gamma') ? 'g1' : url.includes('beta') ? 'b1' : 'p1'] }),
    );
    const { result, rerender } = renderHook(({ model }) => useLlamaLogs({ socket, fetchImpl, model }), {
      initialProps: { model: null as string | null },
    });
    await waitFor(() => expect(result.current.lines).toEqual(['p1']));
    rerender({ model: 'beta' });
    expect(result.current.lines).toEqual([]);
    expect(result.current.loading).toBe(true);
    await waitFor(() => expect(result.current.lines).toEqual(['b1']));
    rerender({ model: 'gamma' });
    await waitFor(() => expect(result.current.lines).toEqual(['g1']));
    act(() => socket.serverEmit('llamaLog', modelLogEvent('beta', 'late b')));
    expect(result.current.lines).toEqual(['g1']);
    expect(socket.emitted.map((e) => [e.event, ...e.args])).toEqual([
      ['subscribeLlamaLogs'],
      ['unsubscribeLlamaLogs'],
      ['subscribeLlamaLogs', { model: 'beta' }],
      ['unsubscribeLlamaLogs', { model: 'beta' }],
      ['subscribeLlamaLogs', { model: 'gamma' }],
    ]);
  });
});
