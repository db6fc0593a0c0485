import { act, renderHook, waitFor } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { FakeSocket } from '../test/fakeSocket';
import { jsonResponse } from '../test/fixtures';
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
