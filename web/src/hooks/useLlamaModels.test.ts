import { act, renderHook } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { FakeSocket } from '../test/fakeSocket';
import { gatewayModel, modelsEvent, TWO_MODELS } from '../test/fixtures';
import type { ModelActionAck } from '../types/gateway';
import { useLlamaModels } from './useLlamaModels';

const T0 = Date.parse('2025-12-26T11:00:00Z');

function setup(connected = false) {
  const socket = new FakeSocket();
  socket.connected = connected;
  const hook = renderHook(() => useLlamaModels({ socket, ackTimeoutMs: 5000, loadRequestHoldMs: 30_000 }));
  return { socket, ...hook };
}

/** The acknowledgement callback of the last `event` the hook emitted. */
function ackOf(socket: FakeSocket, event: string): (ack: unknown) => void {
  const sent = socket.emitted.filter((e) => e.event === event);
  const last = sent[sent.length - 1];
  const callback = last?.args[last.args.length - 1];
  if (typeof callback !== 'function') throw new Error(`no acknowledgement callback on ${event}`);
  return callback as (ack: unknown) => void;
}

describe('useLlamaModels', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: T0 });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('asks for the models on every (re)connect, and at once when already connected', () => {
    const { socket } = setup();
    expect(socket.emitCount('requestLlamaModels')).toBe(0);
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaModels')).toBe(1);
    act(() => socket.serverDisconnect());
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaModels')).toBe(2);
    expect(socket.connectCalls).toBe(0);

    const already = setup(true);
    expect(already.socket.emitCount('requestLlamaModels')).toBe(1);
  });

  it('is loading until the first list, then follows llamaModels', () => {
    const { socket, result } = setup();
    expect(result.current.isLoading).toBe(true);
    expect(result.current.models).toEqual([]);
    expect(result.current.defaultId).toBeNull();

    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent());
    });
    expect(result.current.isLoading).toBe(false);
    expect(result.current.models.map((m) => [m.id, m.phase])).toEqual([
      ['a', 'ready'],
      ['b', 'unloaded'],
    ]);
    expect(result.current.defaultId).toBe('a');

    act(() => socket.serverEmit('llamaModels', modelsEvent([gatewayModel({ id: 'c', default: false })])));
    expect(result.current.models.map((m) => m.id)).toEqual(['c']);
    expect(result.current.defaultId).toBeNull();
    // Garbage does not wipe the list.
    act(() => socket.serverEmit('llamaModels', { type: 'llama_models', data: {} }));
    expect(result.current.models.map((m) => m.id)).toEqual(['c']);
  });

  it("anchors lastUsed on the local clock with the event's timestamp", () => {
    const { socket, result } = setup();
    // The server's clock runs an hour ahead; the model was used 12 s before the event.
    const serverNow = T0 + 3_600_000;
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent([gatewayModel({ lastUsed: serverNow - 12_000, ttlLeft: 48 })], serverNow));
    });
    expect(result.current.models[0]).toMatchObject({ lastUsedLocal: T0 - 12_000, receivedAt: T0, ttlLeft: 48 });
  });

  it('loads with an acknowledgement, shows the pending action, and takes the acked entry', async () => {
    const { socket, result } = setup();
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent());
    });
    let answer: Promise<ModelActionAck> | undefined;
    act(() => {
      answer = result.current.load('b');
    });
    expect(socket.emitted.find((e) => e.event === 'loadModel')?.args[0]).toEqual({ id: 'b' });
    expect(result.current.pending).toEqual({ b: 'load' });

    const loading = gatewayModel({ id: 'b', default: false, state: 'starting', phase: 'loading' });
    act(() => ackOf(socket, 'loadModel')({ ok: true, model: loading }));
    await expect(answer).resolves.toEqual({ ok: true, model: loading });
    expect(result.current.pending).toEqual({});
    expect(result.current.models.find((m) => m.id === 'b')?.phase).toBe('loading');
    expect(result.current.models.find((m) => m.id === 'a')?.phase).toBe('ready');
  });

  it('remembers a load that waits for room until the model starts, is unloaded, or time passes', async () => {
    const { socket, result } = setup();
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent());
    });
    const b = () => result.current.models.find((m) => m.id === 'b');
    const unloadedB = TWO_MODELS[1];
    // Accepted, but `a` must go first: the answer still says unloaded.
    act(() => {
      void result.current.load('b');
    });
    act(() => ackOf(socket, 'loadModel')({ ok: true, model: unloadedB }));
    expect(b()?.loadRequested).toBe(true);
    // `a` drains and unloads: b is still waiting.
    act(() => socket.serverEmit('llamaModels', modelsEvent([gatewayModel({ phase: 'unloading' }), unloadedB!])));
    expect(b()?.loadRequested).toBe(true);
    act(() => socket.serverEmit('llamaModels', modelsEvent([gatewayModel({ phase: 'unloaded' }), { ...unloadedB!, phase: 'loading' }])));
    expect(b()?.loadRequested).toBe(false);

    // An unload of the model calls the request off here too.
    act(() => {
      socket.serverEmit('llamaModels', modelsEvent());
      void result.current.load('b');
    });
    act(() => ackOf(socket, 'loadModel')({ ok: true, model: unloadedB }));
    expect(b()?.loadRequested).toBe(true);
    act(() => {
      void result.current.unload('b');
    });
    act(() => ackOf(socket, 'unloadModel')({ ok: true, model: unloadedB }));
    expect(b()?.loadRequested).toBe(false);

    // One that never begins is forgotten after a while.
    act(() => {
      void result.current.load('b');
    });
    act(() => ackOf(socket, 'loadModel')({ ok: true, model: unloadedB }));
    act(() => vi.advanceTimersByTime(29_999));
    expect(b()?.loadRequested).toBe(true);
    act(() => vi.advanceTimersByTime(1));
    expect(b()?.loadRequested).toBe(false);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('passes a refusal on and leaves the list alone', async () => {
    const { socket, result } = setup();
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent());
    });
    let answer: Promise<ModelActionAck> | undefined;
    act(() => {
      answer = result.current.unload('zzz');
    });
    expect(socket.emitted.find((e) => e.event === 'unloadModel')?.args[0]).toEqual({ id: 'zzz' });
    act(() => ackOf(socket, 'unloadModel')({ ok: false, error: "The model 'zzz' does not exist" }));
    await expect(answer).resolves.toEqual({ ok: false, error: "The model 'zzz' does not exist" });
    expect(result.current.pending).toEqual({});
    expect(result.current.models).toHaveLength(TWO_MODELS.length);
  });

  it('gives up on an acknowledgement that never comes', async () => {
    const { socket, result } = setup();
    act(() => socket.serverConnect());
    let answer: Promise<ModelActionAck> | undefined;
    act(() => {
      answer = result.current.load('a');
    });
    act(() => vi.advanceTimersByTime(4999));
    expect(result.current.pending).toEqual({ a: 'load' });
    act(() => vi.advanceTimersByTime(1));
    await expect(answer).resolves.toEqual({ ok: false, error: 'llamaherd did not answer within 5 s' });
    expect(result.current.pending).toEqual({});
    // A late answer changes nothing.
    act(() => ackOf(socket, 'loadModel')({ ok: true, model: gatewayModel() }));
    expect(result.current.pending).toEqual({});
  });

  it('sends nothing while disconnected, and one action per model at a time', async () => {
    const { socket, result } = setup();
    await expect(result.current.load('a')).resolves.toEqual({ ok: false, error: 'not connected to llamaherd' });
    expect(socket.emitCount('loadModel')).toBe(0);

    act(() => socket.serverConnect());
    act(() => {
      void result.current.load('a');
    });
    await expect(result.current.unload('a')).resolves.toMatchObject({ ok: false });
    expect(socket.emitCount('unloadModel')).toBe(0);
    // Another model is not held up.
    act(() => {
      void result.current.unload('b');
    });
    expect(socket.emitCount('unloadModel')).toBe(1);
    expect(result.current.pending).toEqual({ a: 'load', b: 'unload' });
  });

  it('reads a malformed acknowledgement as a failure', async () => {
    const { socket, result } = setup();
    act(() => socket.serverConnect());
    let answer: Promise<ModelActionAck> | undefined;
    act(() => {
      answer = result.current.load('a');
    });
    act(() => ackOf(socket, 'loadModel')('ok'));
    await expect(answer).resolves.toMatchObject({ ok: false });
  });

  it('removes its listeners and timers on unmount and leaves the socket connected', () => {
    const { socket, result, unmount } = setup();
    act(() => socket.serverConnect());
    act(() => {
      void result.current.load('a');
    });
    expect(socket.listenerCount()).toBeGreaterThan(0);
    unmount();
    expect(socket.listenerCount()).toBe(0);
    expect(vi.getTimerCount()).toBe(0);
    expect(socket.connected).toBe(true);
    expect(socket.disconnectCalls).toBe(0);
  });
});
