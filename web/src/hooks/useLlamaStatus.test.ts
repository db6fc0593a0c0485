import { act, renderHook } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeSocket } from '../test/fakeSocket';
import { modelStatusEvent, SIGKILL_CRASH, statusEvent } from '../test/fixtures';
import { useLlamaStatus } from './useLlamaStatus';

const T0 = Date.parse('2025-12-26T11:00:00Z');

function setup() {
  const socket = new FakeSocket();
  const hook = renderHook(() => useLlamaStatus({ socket }));
  return { socket, ...hook };
}

describe('useLlamaStatus', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: T0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('requests the status on connect, and leaves connecting to the socket owner', () => {
    const { socket, result } = setup();
    expect(socket.connectCalls).toBe(0);
    expect(result.current.connected).toBe(false);
    expect(result.current.connection).toBe('connecting');
    expect(socket.emitCount('requestLlamaStatus')).toBe(0);

    act(() => socket.serverConnect());

    expect(socket.emitCount('requestLlamaStatus')).toBe(1);
    expect(socket.emitted.find((e) => e.event === 'requestLlamaStatus')?.args).toEqual([]);
    expect(result.current.connected).toBe(true);
  });

  it('requests the status at once when the socket is already connected', () => {
    const socket = new FakeSocket();
    socket.connected = true;
    const { result } = renderHook(() => useLlamaStatus({ socket }));
    expect(socket.emitCount('requestLlamaStatus')).toBe(1);
    expect(result.current.connected).toBe(true);
    expect(socket.connectCalls).toBe(0);
  });

  it('is loading with defaults until the first status, then follows llamaStatus', () => {
    const { socket, result } = setup();
    expect(result.current.isLoading).toBe(true);
    expect(result.current.status).toBe('initial');
    expect(result.current.models).toEqual([]);
    expect(result.current.lastError).toBeNull();
    expect(result.current.retries).toBe(0);
    expect(result.current.uptime).toBe(0);
    expect(result.current.startedAt).toBeNull();

    act(() => {
      socket.serverConnect();
      socket.serverEmit(
        'llamaStatus',
        statusEvent({ status: 'starting', models: [], uptime: 0, startedAt: null }),
      );
    });
    expect(result.current.isLoading).toBe(false);
    expect(result.current.status).toBe('starting');

    act(() =>
      socket.serverEmit(
        'llamaStatus',
        statusEvent({ maxRetries: 7, pid: 4242, adopted: true, nextRetryAt: null }),
      ),
    );
    expect(result.current.status).toBe('ready');
    expect(result.current.models).toHaveLength(2);
    expect(result.current.models[0]?.size).toBe(4294967296);
    expect(result.current.uptime).toBe(3600);
    expect(result.current.startedAt).toBe('2025-12-26T10:00:00Z');
    expect(result.current.maxRetries).toBe(7);
    expect(result.current.pid).toBe(4242);
    expect(result.current.adopted).toBe(true);

    act(() =>
      socket.serverEmit(
        'llamaStatus',
        statusEvent({ status: 'crashed', lastError: 'exit code 1', retries: 3, startedAt: null, uptime: 0 }),
      ),
    );
    expect(result.current.status).toBe('crashed');
    expect(result.current.lastError).toBe('exit code 1');
    expect(result.current.retries).toBe(3);
    expect(result.current.maxRetries).toBe(5);
    expect(result.current.adopted).toBe(false);
  });

  it('passes on the reason and the dead server\'s last lines', () => {
    const { socket, result } = setup();
    act(() => socket.serverEmit('llamaStatus', statusEvent(SIGKILL_CRASH)));
    expect(result.current.lastError).toBe('llama-server was killed by SIGKILL unexpectedly');
    expect(result.current.lastExit).toEqual(SIGKILL_CRASH.lastExit);
    expect(result.current.lastExit?.lines).toHaveLength(3);
  });

  it('ignores malformed payloads', () => {
    const { socket, result } = setup();
    act(() => {
      socket.serverEmit('llamaStatus', null);
      socket.serverEmit('llamaStatus', { type: 'llama_status', data: { nope: 1 } });
      socket.serverEmit('llamaStatus', 'ready');
    });
    expect(result.current.isLoading).toBe(true);
  });

  it('ticks the uptime every second from startedAt while ready', () => {
    const { socket, result } = setup();
    // The event's own uptime is stale on purpose: startedAt is what counts.
    act(() => socket.serverEmit('llamaStatus', statusEvent({ uptime: 12 })));
    expect(result.current.uptime).toBe(3600);

    act(() => vi.advanceTimersByTime(1000));
    expect(result.current.uptime).toBe(3601);
    act(() => vi.advanceTimersByTime(62_000));
    expect(result.current.uptime).toBe(3663);
  });

  it('is not fooled by a browser clock that differs from the server', () => {
    const { socket, result } = setup();
    // The server's clock is 10 minutes ahead of the browser's.
    const serverNow = T0 + 10 * 60_000;
    act(() =>
      socket.serverEmit(
        'llamaStatus',
        statusEvent({ startedAt: new Date(serverNow - 90_000).toISOString(), uptime: 90 }, serverNow),
      ),
    );
    expect(result.current.uptime).toBe(90);
    act(() => vi.advanceTimersByTime(5000));
    expect(result.current.uptime).toBe(95);
  });

  it('does not tick unless ready', () => {
    const { socket, result } = setup();
    act(() => socket.serverEmit('llamaStatus', statusEvent({ status: 'stopping', uptime: 50 })));
    act(() => vi.advanceTimersByTime(5000));
    expect(result.current.uptime).toBe(50);
    expect(vi.getTimerCount()).toBe(0);

    act(() => socket.serverEmit('llamaStatus', statusEvent()));
    expect(vi.getTimerCount()).toBe(1);
    act(() => socket.serverEmit('llamaStatus', statusEvent({ status: 'crashed', uptime: 0, startedAt: null })));
    expect(vi.getTimerCount()).toBe(0);
    expect(result.current.uptime).toBe(0);
  });

  it('shows unreachable on disconnect / connect_error and re-requests on reconnect', () => {
    const { socket, result } = setup();
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaStatus')).toBe(1);

    act(() => socket.serverDisconnect('transport close'));
    expect(result.current.connected).toBe(false);
    expect(result.current.connection).toBe('disconnected');

    act(() => socket.connectError('xhr poll error'));
    expect(result.current.connectionError).toBe('xhr poll error');

    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaStatus')).toBe(2);
    expect(result.current.connected).toBe(true);
    expect(result.current.connectionError).toBeNull();

    act(() => socket.serverDisconnect());
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaStatus')).toBe(3);
  });

  it('never reconnects the socket itself: that is its owner\'s job', () => {
    const { socket, result } = setup();
    act(() => socket.serverConnect());
    act(() => socket.serverDisconnect('io server disconnect'));
    expect(result.current.connection).toBe('disconnected');
    act(() => {
      socket.active = false;
      socket.connectError('handshake refused');
    });
    act(() => vi.advanceTimersByTime(60_000));
    expect(socket.connectCalls).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('refresh() asks the server again, only while connected', () => {
    const { socket, result } = setup();
    act(() => result.current.refresh());
    expect(socket.emitCount('requestLlamaStatus')).toBe(0);
    act(() => socket.serverConnect());
    act(() => result.current.refresh());
    expect(socket.emitCount('requestLlamaStatus')).toBe(2);
  });

  it('removes its listeners on unmount and leaves the socket connected', () => {
    const { socket, unmount } = setup();
    act(() => socket.serverConnect());
    act(() => socket.serverEmit('llamaStatus', statusEvent()));
    expect(socket.listenerCount()).toBeGreaterThan(0);

    unmount();

    expect(socket.listenerCount()).toBe(0);
    expect(socket.disconnectCalls).toBe(0);
    expect(socket.connected).toBe(true);
    expect(vi.getTimerCount()).toBe(0);
  });
});

describe('useLlamaStatus of a model', () => {
  it("asks for that model's status on connect and follows only its events", () => {
    const socket = new FakeSocket();
    const { result } = renderHook(() => useLlamaStatus({ socket, model: 'beta' }));
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaStatus')).toBe(0);
    expect(socket.emitted.filter((e) => e.event === 'requestLlamaModelStatus').map((e) => e.args)).toEqual([
      [{ model: 'beta' }],
    ]);
    expect(result.current.isLoading).toBe(true);

    // The primary's llamaStatus and another model's changes are not this card's.
    act(() => socket.serverEmit('llamaStatus', statusEvent({ pid: 1 })));
    act(() => socket.serverEmit('llamaModelStatus', modelStatusEvent('alpha', { pid: 2 })));
    expect(result.current.isLoading).toBe(true);

    act(() => socket.serverEmit('llamaModelStatus', modelStatusEvent('beta', { status: 'starting', pid: 3 })));
    expect(result.current.isLoading).toBe(false);
    expect(result.current.status).toBe('starting');
    expect(result.current.pid).toBe(3);

    act(() => result.current.refresh());
    expect(socket.emitCount('requestLlamaModelStatus')).toBe(2);
  });

  it('starts afresh when the model changes: nothing of the last one is shown', () => {
    const socket = new FakeSocket();
    socket.connected = true;
    const { result, rerender } = renderHook(({ model }) => useLlamaStatus({ socket, model }), {
      initialProps: { model: 'beta' as string | null },
    });
    act(() => socket.serverEmit('llamaModelStatus', modelStatusEvent('beta', { pid: 3 })));
    expect(result.current.pid).toBe(3);

    rerender({ model: 'gamma' });
    expect(result.current.isLoading).toBe(true);
    expect(result.current.pid).toBeNull();
    expect(socket.emitted.at(-1)).toEqual({ event: 'requestLlamaModelStatus', args: [{ model: 'gamma' }] });
    act(() => socket.serverEmit('llamaModelStatus', modelStatusEvent('beta', { pid: 4 })));
    expect(result.current.isLoading).toBe(true);

    // Back to the primary: the seed's event and request.
    rerender({ model: null });
    expect(socket.emitted.at(-1)).toEqual({ event: 'requestLlamaStatus', args: [] });
    act(() => socket.serverEmit('llamaStatus', statusEvent({ pid: 1 })));
    expect(result.current.pid).toBe(1);
    expect(socket.listenerCount('llamaModelStatus')).toBe(0);
  });
});
