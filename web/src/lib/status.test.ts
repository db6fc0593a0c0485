import { describe, expect, it } from 'vitest';
import type { LlamaServiceStatus } from '../types/llama';
import {
  availableActions,
  localStartTime,
  logPayloadModel,
  parseLogPayload,
  parseModelStatusPayload,
  parseStatusPayload,
} from './status';

describe('parseStatusPayload', () => {
  it('reads the envelope, with the extra fields', () => {
    const parsed = parseStatusPayload({
      type: 'llama_status',
      data: {
        status: 'crashed',
        models: [{ id: 'm', name: 'm', size: 1, type: 'llama', modified_at: 2 }],
        lastError: 'boom',
        retries: 2,
        uptime: 0,
        startedAt: null,
        maxRetries: 5,
        pid: null,
        adopted: false,
        nextRetryAt: '2025-12-26T10:00:05Z',
        restarts: 3,
        lastExit: { code: 1, signal: null },
      },
      timestamp: 42,
    });
    expect(parsed?.timestamp).toBe(42);
    expect(parsed?.data).toEqual({
      status: 'crashed',
      models: [{ id: 'm', name: 'm', size: 1, type: 'llama', modified_at: 2 }],
      lastError: 'boom',
      retries: 2,
      uptime: 0,
      startedAt: null,
      maxRetries: 5,
      pid: null,
      adopted: false,
      nextRetryAt: '2025-12-26T10:00:05Z',
      restarts: 3,
      lastExit: { code: 1, signal: null },
    });
  });

  it('accepts a bare data object and fills in missing fields', () => {
    const parsed = parseStatusPayload({ status: 'initial' });
    expect(parsed).toEqual({
      timestamp: null,
      data: { status: 'initial', models: [], lastError: null, retries: 0, uptime: 0, startedAt: null },
    });
  });

  it('rejects what is not a status', () => {
    expect(parseStatusPayload(null)).toBeNull();
    expect(parseStatusPayload('ready')).toBeNull();
    expect(parseStatusPayload({ data: { models: [] } })).toBeNull();
  });

  it('repairs odd models', () => {
    const parsed = parseStatusPayload({ status: 'ready', models: [{ id: 'x' }, null, 'y'] });
    expect(parsed?.data.models).toEqual([{ id: 'x', name: 'x', size: 0, type: '', modified_at: 0 }]);
  });

  it("keeps the dead server's output lines of lastExit", () => {
    const lines = ['llama_model_load: error loading model: invalid magic characters', 'main: exiting'];
    const parsed = parseStatusPayload({
      status: 'error',
      lastError: 'llama-server exited with code 1 while starting: llama_model_load: error loading model',
      lastExit: { code: 1, signal: null, lines },
    });
    expect(parsed?.data.lastExit).toEqual({ code: 1, signal: null, lines });
  });

  it('leaves lines out for an older server, and repairs odd ones', () => {
    const old = parseStatusPayload({ status: 'crashed', lastExit: { code: null, signal: 'SIGKILL' } });
    expect(old?.data.lastExit).toEqual({ code: null, signal: 'SIGKILL' });
    expect(old?.data.lastExit).not.toHaveProperty('lines');

    const odd = parseStatusPayload({ status: 'crashed', lastExit: { code: 'x', signal: '', lines: [1, 'two'] } });
    expect(odd?.data.lastExit).toEqual({ code: null, signal: null, lines: ['1', 'two'] });
    const notAList = parseStatusPayload({ status: 'crashed', lastExit: { code: 2, signal: null, lines: 'a | b' } });
    expect(notAList?.data.lastExit).toEqual({ code: 2, signal: null });
  });
});

describe('availableActions', () => {
  // One row per state: [state, start, stop, restart]. The reasons are next to the table in status.ts.
  const TABLE: Array<[LlamaServiceStatus, boolean, boolean, boolean]> = [
    ['initial', true, false, false],
    ['checking', false, true, false],
    ['starting', false, true, true],
    ['ready', false, true, true],
    ['crashed', false, true, true],
    ['stopping', false, false, false],
    ['error', true, true, true],
  ];

  it.each(TABLE)('%s: start %s, stop %s, restart %s', (status, start, stop, restart) => {
    expect(availableActions(status)).toEqual({ start, stop, restart });
  });

  it('allows nothing before the first status, everything in a state it does not know', () => {
    expect(availableActions(null)).toEqual({ start: false, stop: false, restart: false });
    expect(availableActions('hibernating')).toEqual({ start: true, stop: true, restart: true });
    // Not fooled by the names every object has.
    expect(availableActions('constructor')).toEqual({ start: true, stop: true, restart: true });
  });
});

describe('parseLogPayload', () => {
  it('reads lines from the envelope', () => {
    expect(parseLogPayload({ type: 'llama_log', data: { lines: ['a', 'b'] }, timestamp: 1 })).toEqual(['a', 'b']);
    expect(parseLogPayload({ lines: ['c'] })).toEqual(['c']);
    expect(parseLogPayload(null)).toEqual([]);
    expect(parseLogPayload({ data: { lines: 'nope' } })).toEqual([]);
  });
});

describe('localStartTime', () => {
  const started = '2025-12-26T10:00:00Z';
  const startedMs = Date.parse(started);

  it('places startedAt relative to arrival using the server timestamp', () => {
    // Server says the event is 1 h after start; it arrived at local time 5000.
    expect(localStartTime({ startedAt: started, uptime: 0 }, startedMs + 3_600_000, 5000)).toBe(5000 - 3_600_000);
  });

  it('falls back to uptime without a timestamp, and to nothing without either', () => {
    expect(localStartTime({ startedAt: started, uptime: 60 }, null, 100_000)).toBe(40_000);
    expect(localStartTime({ startedAt: null, uptime: 10 }, null, 100_000)).toBe(90_000);
    expect(localStartTime({ startedAt: started, uptime: Number.NaN }, null, 1)).toBe(startedMs);
    expect(localStartTime({ startedAt: null, uptime: Number.NaN }, null, 1)).toBeNull();
  });
});

describe('parseModelStatusPayload and logPayloadModel', () => {
  it("reads a model's status with the model it names", () => {
    const parsed = parseModelStatusPayload({
      type: 'model_status',
      data: { model: 'beta', status: 'ready', models: [], lastError: null, retries: 0, uptime: 5, startedAt: null, pid: 7 },
      timestamp: 1000,
    });
    expect(parsed?.model).toBe('beta');
    expect(parsed?.data.status).toBe('ready');
    expect(parsed?.data.pid).toBe(7);
    expect(parsed?.timestamp).toBe(1000);
  });

  it('refuses one that names no model, or is not a status', () => {
    expect(parseModelStatusPayload({ type: 'model_status', data: { status: 'ready' } })).toBeNull();
    expect(parseModelStatusPayload({ data: { model: 'beta' } })).toBeNull();
    expect(parseModelStatusPayload('ready')).toBeNull();
  });

  it("names a log batch's model, or null for an older server's", () => {
    expect(logPayloadModel({ type: 'llama_log', data: { lines: ['x'], model: 'beta' } })).toBe('beta');
    expect(logPayloadModel({ type: 'llama_log', data: { lines: ['x'] } })).toBeNull();
    expect(logPayloadModel(null)).toBeNull();
  });
});
