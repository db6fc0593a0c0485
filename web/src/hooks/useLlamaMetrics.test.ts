import { act, renderHook } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeSocket } from '../test/fakeSocket';
import { metricsEvent, modelMetrics, NOW_S } from '../test/history';
import { useLlamaMetrics } from './useLlamaMetrics';

const T0 = NOW_S * 1000;

function setup(connected = false, maxPoints = 900) {
  const socket = new FakeSocket();
  socket.connected = connected;
  const hook = renderHook(() => useLlamaMetrics({ socket, maxPoints }));
  return { socket, ...hook };
}

describe('useLlamaMetrics', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: T0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('asks for the figures on every (re)connect, and at once when already connected', () => {
    const { socket } = setup();
    expect(socket.emitCount('requestLlamaMetrics')).toBe(0);
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaMetrics')).toBe(1);
    act(() => socket.serverDisconnect());
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaMetrics')).toBe(2);
    expect(socket.connectCalls).toBe(0);
    expect(setup(true).socket.emitCount('requestLlamaMetrics')).toBe(1);
  });

  it('is loading until the first payload, then holds the latest figures per model', () => {
    const { socket, result } = setup(true);
    expect(result.current.isLoading).toBe(true);
    expect(result.current.byId).toEqual({});
    act(() => socket.serverEmit('llamaMetrics', metricsEvent([modelMetrics(), modelMetrics({ id: 'b', tokensPerSecond: null })])));
    expect(result.current.isLoading).toBe(false);
    expect(result.current.byId.a?.tokensPerSecond).toBe(1234.56);
    expect(result.current.byId.b?.tokensPerSecond).toBeNull();

    act(() => socket.serverEmit('llamaMetrics', metricsEvent([modelMetrics({ tokensPerSecond: 99 })], T0 + 1000)));
    expect(result.current.byId.a?.tokensPerSecond).toBe(99);
    expect(result.current.byId.b).toBeUndefined(); // a model the server no longer lists is gone
  });

  it('keeps the readings as points, at the server time, at most maxPoints per model', () => {
    const { socket, result } = setup(true, 2);
    for (let i = 0; i < 3; i += 1) {
      act(() => socket.serverEmit('llamaMetrics', metricsEvent([modelMetrics({ tokensPerSecond: i })], T0 + i * 1000)));
    }
    expect(result.current.points.a?.map((p) => [p.at, p.tokensPerSecond])).toEqual([
      [T0 + 1000, 1],
      [T0 + 2000, 2],
    ]);
  });

  it('measures the server clock against the local one', () => {
    const { socket, result } = setup(true);
    expect(result.current.clockOffsetMs).toBe(0);
    act(() => socket.serverEmit('llamaMetrics', metricsEvent([modelMetrics()], T0 + 5000)));
    expect(result.current.clockOffsetMs).toBe(5000);
    act(() => socket.serverEmit('llamaMetrics', { type: 'llama_metrics', data: { models: [] } }));
    expect(result.current.clockOffsetMs).toBe(5000); // a payload without a time changes nothing
  });

  it('ignores what is not a metrics payload, and stops listening when unmounted', () => {
    const { socket, result, unmount } = setup(true);
    act(() => socket.serverEmit('llamaMetrics', { nonsense: true }));
    expect(result.current.isLoading).toBe(true);
    unmount();
    expect(socket.listenerCount('llamaMetrics')).toBe(0);
    expect(socket.listenerCount('connect')).toBe(0);
  });

  it('refresh asks again only while connected', () => {
    const { socket, result } = setup(false);
    result.current.refresh();
    expect(socket.emitCount('requestLlamaMetrics')).toBe(0);
    act(() => socket.serverConnect());
    result.current.refresh();
    expect(socket.emitCount('requestLlamaMetrics')).toBe(2);
  });
});
