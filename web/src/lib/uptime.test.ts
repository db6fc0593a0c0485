import { describe, expect, it } from 'vitest';
import type { HistoryTransition } from '../types/history';
import {
  availability,
  exitText,
  formatAvailability,
  restartMarkers,
  segmentKind,
  uptimeSegments,
  type Segment,
} from './uptime';

const H = 3600;
const NOW = 1_766_750_400; // 2025-12-26T12:00:00Z
const DAY = { from: NOW - 24 * H, to: NOW };

function t(at: number, from: string, to: string, extra: Partial<HistoryTransition> = {}): HistoryTransition {
  return { model: 'a', at, from, to, reason: null, exitCode: null, signal: null, ...extra };
}

/** A start at `at`: initial -> checking -> starting -> ready within `loadS` seconds. */
function start(at: number, loadS = 2): HistoryTransition[] {
  return [t(at, 'initial', 'checking'), t(at + 0.5, 'checking', 'starting'), t(at + loadS, 'starting', 'ready')];
}

const kinds = (segments: Segment[]) => segments.map((s) => s.kind);
const total = (segments: Segment[]) => segments.reduce((n, s) => n + (s.to - s.from), 0);

describe('segmentKind', () => {
  it.each([
    ['ready', 'ready'],
    ['checking', 'starting'],
    ['starting', 'starting'],
    ['crashed', 'crashed'],
    ['error', 'error'],
    ['initial', 'stopped'],
    ['stopping', 'stopped'],
    ['sleeping', 'unknown'],
    [null, 'unknown'],
  ])('%s is %s', (status, kind) => {
    expect(segmentKind(status)).toBe(kind);
  });
});

describe('uptimeSegments', () => {
  it('covers the window exactly, oldest first, merging checking into starting', () => {
    const segments = uptimeSegments(start(NOW - 10 * H), DAY, NOW);
    expect(segments).toEqual([
      { kind: 'stopped', from: NOW - 24 * H, to: NOW - 10 * H },
      { kind: 'starting', from: NOW - 10 * H, to: NOW - 10 * H + 2 },
      { kind: 'ready', from: NOW - 10 * H + 2, to: NOW },
    ]);
    expect(total(segments)).toBe(24 * H);
  });

  it('takes the state at the window start from the last transition before it', () => {
    const transitions = [...start(NOW - 30 * H), t(NOW - 2 * H, 'ready', 'crashed', { signal: 'SIGKILL' }), t(NOW - 2 * H + 1, 'crashed', 'starting'), t(NOW - 2 * H + 3, 'starting', 'ready')];
    const segments = uptimeSegments(transitions, DAY, NOW);
    expect(segments).toEqual([
      { kind: 'ready', from: NOW - 24 * H, to: NOW - 2 * H },
      { kind: 'crashed', from: NOW - 2 * H, to: NOW - 2 * H + 1 },
      { kind: 'starting', from: NOW - 2 * H + 1, to: NOW - 2 * H + 3 },
      { kind: 'ready', from: NOW - 2 * H + 3, to: NOW },
    ]);
  });

  it('counts a transition exactly at the window start as before it', () => {
    const segments = uptimeSegments([t(DAY.from, 'starting', 'ready')], DAY, NOW);
    expect(segments).toEqual([{ kind: 'ready', from: DAY.from, to: NOW }]);
  });

  it('is the state before the first transition when none came before the window', () => {
    // The history was fetched from the window start: the first transition says where it came from.
    const segments = uptimeSegments([t(NOW - H, 'ready', 'stopping'), t(NOW - H + 1, 'stopping', 'initial')], DAY, NOW);
    expect(kinds(segments)).toEqual(['ready', 'stopped']);
    expect(segments[0]).toEqual({ kind: 'ready', from: DAY.from, to: NOW - H });
  });

  it('with no transitions at all, is the current state all along, or unknown without one', () => {
    expect(uptimeSegments([], DAY, NOW, { current: 'ready' })).toEqual([{ kind: 'ready', from: DAY.from, to: NOW }]);
    expect(uptimeSegments([], DAY, NOW)).toEqual([{ kind: 'unknown', from: DAY.from, to: NOW }]);
    expect(uptimeSegments([], DAY, NOW, { current: null })).toEqual([{ kind: 'unknown', from: DAY.from, to: NOW }]);
  });

  it('shows a model never started as stopped, with no availability', () => {
    const segments = uptimeSegments([], DAY, NOW, { current: 'initial' });
    expect(segments).toEqual([{ kind: 'stopped', from: DAY.from, to: NOW }]);
    expect(availability(segments)).toEqual({ ready: 0, wanted: 0, ratio: null });
    expect(formatAvailability(availability(segments).ratio)).toBe('—');
  });

  it('ignores the current state when transitions say more', () => {
    const segments = uptimeSegments(start(NOW - H), DAY, NOW, { current: 'crashed' });
    expect(kinds(segments)).toEqual(['stopped', 'starting', 'ready']);
  });

  it('runs the ongoing state up to now, not to the window end', () => {
    const window = { from: NOW - H, to: NOW + H };
    const segments = uptimeSegments([t(NOW - 60, 'ready', 'crashed', { exitCode: 1 })], window, NOW);
    expect(segments).toEqual([
      { kind: 'ready', from: NOW - H, to: NOW - 60 },
      { kind: 'crashed', from: NOW - 60, to: NOW },
    ]);
  });

  it('is empty for a window that has not begun or has no length', () => {
    expect(uptimeSegments(start(NOW - H), { from: NOW + 10, to: NOW + H }, NOW)).toEqual([]);
    expect(uptimeSegments(start(NOW - H), { from: NOW - 10, to: NOW - 10 }, NOW)).toEqual([]);
  });

  it('ignores transitions after now or the window, and sorts what comes unsorted', () => {
    const transitions = [t(NOW + 5, 'ready', 'crashed'), ...start(NOW - 2 * H).reverse()];
    const window = { from: NOW - 3 * H, to: NOW - H };
    expect(uptimeSegments(transitions, window, NOW)).toEqual([
      { kind: 'stopped', from: NOW - 3 * H, to: NOW - 2 * H },
      { kind: 'starting', from: NOW - 2 * H, to: NOW - 2 * H + 2 },
      { kind: 'ready', from: NOW - 2 * H + 2, to: NOW - H },
    ]);
  });

  it('marks what went unrecorded between two runs of llamaherd as unknown', () => {
    // Ready, then llamaherd was killed; its next run started the model from initial again.
    const transitions = [...start(NOW - 5 * H), ...start(NOW - 3 * H)];
    const segments = uptimeSegments(transitions, DAY, NOW);
    expect(segments).toEqual([
      { kind: 'stopped', from: DAY.from, to: NOW - 5 * H },
      { kind: 'starting', from: NOW - 5 * H, to: NOW - 5 * H + 2 },
      { kind: 'unknown', from: NOW - 5 * H + 2, to: NOW - 3 * H },
      { kind: 'starting', from: NOW - 3 * H, to: NOW - 3 * H + 2 },
      { kind: 'ready', from: NOW - 3 * H + 2, to: NOW },
    ]);
    // The unknown stretch counts neither way.
    expect(availability(segments).wanted).toBe(4 + 3 * H - 2);
  });

  it('keeps time before a cut list unknown', () => {
    // Only the newest transitions were fetched: what came before the oldest is not known.
    const transitions = [t(NOW - 2 * H, 'ready', 'crashed'), t(NOW - 2 * H + 1, 'crashed', 'starting'), t(NOW - 2 * H + 2, 'starting', 'ready')];
    const segments = uptimeSegments(transitions, DAY, NOW, { knownSince: NOW - 2 * H });
    expect(kinds(segments)).toEqual(['unknown', 'crashed', 'starting', 'ready']);
    expect(segments[0]).toEqual({ kind: 'unknown', from: DAY.from, to: NOW - 2 * H });
  });

  it('merges a run of wanted states of one kind, and several transitions at one instant', () => {
    const transitions = [t(NOW - 10, 'initial', 'checking'), t(NOW - 10, 'checking', 'starting'), t(NOW - 5, 'starting', 'ready')];
    expect(uptimeSegments(transitions, { from: NOW - 20, to: NOW }, NOW)).toEqual([
      { kind: 'stopped', from: NOW - 20, to: NOW - 10 },
      { kind: 'starting', from: NOW - 10, to: NOW - 5 },
      { kind: 'ready', from: NOW - 5, to: NOW },
    ]);
  });

  it('shows an error that lasts as error', () => {
    const transitions = [t(NOW - 100, 'initial', 'checking'), t(NOW - 99, 'checking', 'error', { reason: 'port 8134 is held' })];
    const segments = uptimeSegments(transitions, { from: NOW - 200, to: NOW }, NOW);
    expect(kinds(segments)).toEqual(['stopped', 'starting', 'error']);
    expect(availability(segments)).toEqual({ ready: 0, wanted: 100, ratio: 0 });
  });
});

describe('availability', () => {
  it('is ready time over wanted time; stopped and unknown time count neither way', () => {
    const segments: Segment[] = [
      { kind: 'stopped', from: 0, to: 1000 },
      { kind: 'starting', from: 1000, to: 1010 },
      { kind: 'ready', from: 1010, to: 1900 },
      { kind: 'crashed', from: 1900, to: 1950 },
      { kind: 'error', from: 1950, to: 2000 },
      { kind: 'unknown', from: 2000, to: 5000 },
    ];
    expect(availability(segments)).toEqual({ ready: 890, wanted: 1000, ratio: 0.89 });
  });

  it('is 1 for a model ready all the time it was wanted', () => {
    expect(availability([{ kind: 'stopped', from: 0, to: 50 }, { kind: 'ready', from: 50, to: 100 }]).ratio).toBe(1);
  });

  it('is null with nothing at all', () => {
    expect(availability([]).ratio).toBeNull();
  });
});

describe('formatAvailability', () => {
  it.each([
    [1, '100%'],
    [0.99995, '99.99%'],
    [0.5539, '55.39%'],
    [0, '0.00%'],
    [null, '—'],
    [Number.NaN, '—'],
  ])('%s -> %s', (ratio, text) => {
    expect(formatAvailability(ratio)).toBe(text);
  });
});

describe('restartMarkers', () => {
  it('is every transition into crashed within the window, with its exit', () => {
    const transitions = [
      t(NOW - 30 * H, 'ready', 'crashed', { exitCode: 1 }),
      t(NOW - 2 * H, 'ready', 'crashed', { signal: 'SIGKILL', exitCode: -9, reason: 'killed' }),
      t(NOW - 2 * H + 1, 'crashed', 'starting'),
      t(NOW - H, 'starting', 'crashed', { exitCode: 1 }),
      t(NOW - H + 1, 'crashed', 'error'),
    ];
    expect(restartMarkers(transitions, DAY, NOW)).toEqual([
      { at: NOW - 2 * H, exitCode: -9, signal: 'SIGKILL', reason: 'killed' },
      { at: NOW - H, exitCode: 1, signal: null, reason: null },
    ]);
    expect(restartMarkers([], DAY, NOW)).toEqual([]);
  });

  it('says how the server ended', () => {
    expect(exitText({ signal: 'SIGKILL', exitCode: -9 })).toBe('killed by SIGKILL');
    expect(exitText({ signal: null, exitCode: 1 })).toBe('exit code 1');
    expect(exitText({ signal: null, exitCode: null })).toBe('');
  });
});
