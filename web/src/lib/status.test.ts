import { describe, expect, it } from 'vitest';
import { localStartTime, normalizeStatus, parseLogPayload, parseStatusPayload } from './status';

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
    const data = normalizeStatus({ status: 'ready', models: [{ id: 'x' }, null, 'y'] });
    expect(data?.models).toEqual([{ id: 'x', name: 'x', size: 0, type: '', modified_at: 0 }]);
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
