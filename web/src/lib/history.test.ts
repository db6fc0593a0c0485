import { describe, expect, it } from 'vitest';
import { historyFixture, minuteRow, NOW_S, requestRow, transition } from '../test/history';
import { chartPoints, filterRequests, knownSince, parseHistory, statusClass } from './history';

describe('parseHistory', () => {
  it('reads the payload as the server sends it', () => {
    const fixture = historyFixture({ store: { ok: false, warning: 'disk full' } });
    expect(parseHistory(JSON.parse(JSON.stringify(fixture)))).toEqual(fixture);
  });

  it('drops malformed rows and reads missing lists as empty', () => {
    const parsed = parseHistory({
      transitions: [{ model: 'a', at: 'soon', from: 'initial', to: 'ready' }, { at: 1, from: 'a', to: 'b' }, null, transition()],
      minutes: 'none',
      requests: [{ model: 'a', at: 5, status: 'ok' }],
    });
    expect(parsed.transitions).toEqual([transition()]);
    expect(parsed.minutes).toEqual([]);
    expect(parsed.starts).toEqual([]);
    expect(parsed.requests).toHaveLength(1);
    expect(parsed.requests[0]).toMatchObject({ model: 'a', at: 5, status: null, latencyMs: 0, error: null });
    expect(parsed.store).toEqual({ ok: true, warning: null });
    expect(parseHistory(null).transitions).toEqual([]);
  });
});

describe('statusClass and filterRequests', () => {
  it.each([
    [200, '2xx'],
    [204, '2xx'],
    [404, '4xx'],
    [429, '4xx'],
    [503, '5xx'],
    [null, 'none'],
  ])('%s is %s', (status, cls) => {
    expect(statusClass(status)).toBe(cls);
  });

  it('filters by model and status class, newest first', () => {
    const { requests } = historyFixture();
    expect(filterRequests(requests, { model: null, statusClass: null }).map((r) => r.at)).toEqual(
      [100, 200, 400, 500].map((ago) => NOW_S - ago),
    );
    expect(filterRequests(requests, { model: 'b', statusClass: null }).map((r) => r.model)).toEqual(['b']);
    expect(filterRequests(requests, { model: 'a', statusClass: '2xx' }).map((r) => r.at)).toEqual([NOW_S - 500]);
    expect(filterRequests(requests, { model: null, statusClass: '5xx' }).map((r) => r.status)).toEqual([503]);
    expect(filterRequests(requests, { model: null, statusClass: 'none' }).map((r) => r.error)).toEqual(['client left']);
    expect(filterRequests(requests, { model: 'b', statusClass: '4xx' })).toEqual([]);
    expect(filterRequests([requestRow()], { model: 'zzz', statusClass: null })).toEqual([]);
  });
});

describe('chartPoints', () => {
  const minutes = [
    minuteRow({ minute: NOW_S - 7200 }), // before the range
    minuteRow({ minute: NOW_S - 120, tokensPerSecond: 800 }),
    minuteRow({ model: 'b', minute: NOW_S - 120 }),
    minuteRow({ minute: NOW_S - 60, tokensPerSecond: 900, latencyP95Ms: 300 }),
  ];

  it('is one point per minute of the model in the range, oldest first, at the minute start', () => {
    const points = chartPoints([...minutes].reverse(), [], 'a', NOW_S - 3600, NOW_S);
    expect(points.map((p) => p.t)).toEqual([(NOW_S - 120) * 1000, (NOW_S - 60) * 1000]);
    expect(points.map((p) => p.tokensPerSecond)).toEqual([800, 900]);
    expect(points[1]).toMatchObject({ latencyP95Ms: 300, rssBytes: 20 * 1048576, live: false });
  });

  it('goes on with the live readings after the last minute, and only those', () => {
    const live = [
      { at: (NOW_S - 90) * 1000, tokensPerSecond: 1, latencyP50Ms: 1, rssBytes: 1 }, // the history has it
      { at: (NOW_S - 30) * 1000, tokensPerSecond: 950, latencyP50Ms: 80, rssBytes: 21 * 1048576 },
      { at: (NOW_S + 30) * 1000, tokensPerSecond: 2, latencyP50Ms: 2, rssBytes: 2 }, // after the range
    ];
    const points = chartPoints(minutes, live, 'a', NOW_S - 3600, NOW_S);
    expect(points).toHaveLength(3);
    expect(points[2]).toEqual({
      t: (NOW_S - 30) * 1000,
      tokensPerSecond: 950,
      latencyP50Ms: 80,
      latencyP95Ms: null,
      rssBytes: 21 * 1048576,
      live: true,
    });
  });

  it('is the live readings alone without history (switched off)', () => {
    const live = [
      { at: (NOW_S - 7200) * 1000, tokensPerSecond: 1, latencyP50Ms: null, rssBytes: null },
      { at: (NOW_S - 10) * 1000, tokensPerSecond: 3, latencyP50Ms: null, rssBytes: null },
    ];
    expect(chartPoints([], live, 'a', NOW_S - 3600, NOW_S).map((p) => p.tokensPerSecond)).toEqual([3]);
  });
});

describe('knownSince', () => {
  it('is null while the list is shorter than its limit: nothing was cut', () => {
    expect(knownSince([transition()], 1000, NOW_S - 86400)).toBeNull();
  });

  it('is the oldest transition when the list was cut to its limit', () => {
    const list = [transition({ at: NOW_S - 50 }), transition({ at: NOW_S - 80 })];
    expect(knownSince(list, 2, NOW_S - 86400)).toBe(NOW_S - 80);
    expect(knownSince(list, 2, NOW_S - 60)).toBeNull(); // it reaches the start of the query anyway
  });
});
