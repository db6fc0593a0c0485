import { describe, expect, it } from 'vitest';
import { metricsEvent, modelMetrics, NOW_S } from '../test/history';
import { appendLivePoints, formatRate, formatSlots, livePoint, parseMetricsPayload } from './metrics';

describe('parseMetricsPayload', () => {
  it('reads the event as the server sends it', () => {
    const event = metricsEvent([modelMetrics(), modelMetrics({ id: 'b', tokensPerSecond: null })]);
    expect(parseMetricsPayload(JSON.parse(JSON.stringify(event)))).toEqual({
      models: event.data.models,
      timestamp: NOW_S * 1000,
    });
  });

  it('reads missing figures as unknown and counts as zero, and skips entries without an id', () => {
    const parsed = parseMetricsPayload({ timestamp: 'later', data: { models: [{ id: 'a' }, { tokensPerSecond: 3 }, 'x'] } });
    expect(parsed?.timestamp).toBeNull();
    expect(parsed?.models).toEqual([
      {
        id: 'a',
        requests: { total: 0, errors: 0 },
        tokensPerSecond: null,
        promptTokensPerSecond: null,
        latencyP50Ms: null,
        ttftP50Ms: null,
        requestsLastMinute: 0,
        queued: 0,
        inFlight: 0,
        memory: { rssBytes: null, vramBytes: null, cpuPercent: null },
        slotsBusy: null,
        slotsTotal: null,
        loadTimeS: null,
        peakLoadRssBytes: null,
      },
    ]);
  });

  it('is null for something that holds no model list', () => {
    expect(parseMetricsPayload(null)).toBeNull();
    expect(parseMetricsPayload({ data: {} })).toBeNull();
    expect(parseMetricsPayload([1])).toBeNull();
  });
});

describe('live points', () => {
  it('keeps a reading only when it measured something', () => {
    expect(livePoint(modelMetrics(), 5)).toEqual({ at: 5, tokensPerSecond: 1234.56, latencyP50Ms: 114, rssBytes: 20 * 1048576 });
    const idle = modelMetrics({ tokensPerSecond: null, latencyP50Ms: null, memory: { rssBytes: null, vramBytes: null, cpuPercent: null } });
    expect(livePoint(idle, 5)).toBeNull();
  });

  it('appends one reading per model and keeps the newest `max`', () => {
    const a = modelMetrics();
    const b = modelMetrics({ id: 'b' });
    let points = appendLivePoints({}, [a, b], 1, 3);
    points = appendLivePoints(points, [a], 2, 3);
    points = appendLivePoints(points, [a], 3, 3);
    const before = points;
    points = appendLivePoints(points, [a], 4, 3);
    expect(points.a?.map((p) => p.at)).toEqual([2, 3, 4]);
    expect(points.b?.map((p) => p.at)).toEqual([1]);
    expect(before.a?.map((p) => p.at)).toEqual([1, 2, 3]); // not changed in place
  });
});

describe('formatting', () => {
  it.each([
    [12.34, '12.3 tok/s'],
    [1234.56, '1235 tok/s'],
    [0, '0.0 tok/s'],
    [null, '—'],
    [undefined, '—'],
  ])('rate %s -> %s', (rate, text) => {
    expect(formatRate(rate)).toBe(text);
  });

  it('slots', () => {
    expect(formatSlots(1, 4)).toBe('1/4');
    expect(formatSlots(null, 4)).toBe('—');
    expect(formatSlots(undefined, undefined)).toBe('—');
  });
});
