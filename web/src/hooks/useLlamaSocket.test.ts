import { act, renderHook } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiKeyStore } from '../lib/apiKey';
import { REJECTED_RECONNECT_MS, SERVER_KICK_RECONNECT_MS } from '../lib/socket';
import { FakeSocket } from '../test/fakeSocket';
import { useLlamaSocket } from './useLlamaSocket';

function setup(url?: string, keys = new ApiKeyStore(null)) {
  const socket = new FakeSocket();
  const factory = vi.fn((_url?: string) => socket);
  const hook = renderHook(() => useLlamaSocket(url, factory, keys));
  return { socket, factory, keys, ...hook };
}

describe('useLlamaSocket', () => {
  beforeEach(() => {
    vi.useFakeTimers();
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('makes one socket for the page, connects it, and disconnects it on unmount', () => {
    const { socket, factory, result, rerender, unmount } = setup('http://127.0.0.1:3000');
    expect(factory).toHaveBeenCalledTimes(1);
    expect(factory).toHaveBeenCalledWith('http://127.0.0.1:3000');
    expect(result.current).toBe(socket);
    expect(socket.connectCalls).toBe(1);

    rerender();
    expect(factory).toHaveBeenCalledTimes(1);
    expect(socket.connectCalls).toBe(1);

    act(() => socket.serverConnect());
    unmount();
    expect(socket.disconnectCalls).toBe(1);
    expect(socket.listenerCount()).toBe(0);
  });

  it('connects again after the server closed the socket on purpose', () => {
    const { socket } = setup();
    act(() => socket.serverConnect());
    act(() => socket.serverDisconnect('io server disconnect'));
    act(() => vi.advanceTimersByTime(SERVER_KICK_RECONNECT_MS - 1));
    expect(socket.connectCalls).toBe(1);
    act(() => vi.advanceTimersByTime(1));
    expect(socket.connectCalls).toBe(2);
  });

  it('connects again after a refused handshake, and leaves other errors to socket.io', () => {
    const { socket } = setup();
    // A transport error: socket.io is still retrying by itself (the socket stays active).
    act(() => socket.connectError('xhr poll error'));
    act(() => vi.advanceTimersByTime(10 * REJECTED_RECONNECT_MS));
    expect(socket.connectCalls).toBe(1);

    act(() => {
      socket.active = false;
      socket.connectError('handshake refused');
    });
    act(() => vi.advanceTimersByTime(REJECTED_RECONNECT_MS));
    expect(socket.connectCalls).toBe(2);
  });

  it('does not connect again once connected, nor after its own disconnect', () => {
    const { socket, unmount } = setup();
    act(() => socket.serverConnect());
    act(() => socket.serverDisconnect('io server disconnect'));
    // socket.io came back first: the pending connect is dropped.
    act(() => socket.serverConnect());
    act(() => vi.advanceTimersByTime(SERVER_KICK_RECONNECT_MS));
    expect(socket.connectCalls).toBe(1);

    // A pending reconnect dies with the page.
    act(() => socket.serverDisconnect('io server disconnect'));
    unmount();
    expect(vi.getTimerCount()).toBe(0);
    act(() => vi.advanceTimersByTime(SERVER_KICK_RECONNECT_MS));
    expect(socket.connectCalls).toBe(1);
  });

  it('reports a handshake refused for its key, and does not try the same key again', () => {
    const { socket, keys } = setup();
    act(() => {
      socket.active = false;
      socket.connectError('This llamaherd requires an API key.');
    });
    expect(keys.snapshot().problem).toEqual({ code: 'missing_api_key', message: 'This llamaherd requires an API key.' });
    act(() => vi.advanceTimersByTime(10 * REJECTED_RECONNECT_MS));
    expect(socket.connectCalls).toBe(1);
  });

  it('says which key was refused: an unknown one, or one without the scope', () => {
    const keys = new ApiKeyStore(null);
    keys.use('app-key-0123456789ab');
    const { socket } = setup(undefined, keys);
    act(() => {
      socket.active = false;
      socket.connectError("The API key 'app' lacks the admin scope.");
    });
    expect(keys.snapshot().problem).toEqual({ code: 'insufficient_scope', message: "The API key 'app' lacks the admin scope." });
  });

  it('reports nothing for a transport error or a refusal that is not about the key', () => {
    const { socket, keys } = setup();
    act(() => socket.connectError('xhr poll error'));
    act(() => {
      socket.active = false;
      socket.connectError('handshake refused');
    });
    expect(keys.snapshot().problem).toBeNull();
  });
});
