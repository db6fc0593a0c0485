/**
 * Uptime from a model's state transitions: the segments of a time window, each in one kind of
 * state, and the availability they add up to. Pure functions of (transitions, window, now).
 *
 * Times are unix seconds on the server's clock, like `GET /api/history`.
 *
 * Availability = time `ready` / time the model was wanted, where "wanted" is every moment
 * llamaherd was trying to serve it: `ready`, `checking`/`starting`, `crashed` and `error`.
 * Time `initial` or `stopping` (not loaded, unloaded by TTL or to make room, stopped by hand)
 * does not count for or against it, nor does time nobody recorded (`unknown`: before the
 * history that was fetched, or while llamaherd itself was not running). A model that was
 * never wanted in the window has no availability (null), not 0 % or 100 %.
 */
import type { HistoryTransition } from '../types/history';

/** How a state counts: the colour of its segment, and whether it was wanted. */
export type SegmentKind = 'ready' | 'starting' | 'crashed' | 'error' | 'stopped' | 'unknown';

/** The kinds that count as wanted (the denominator of availability). */
export const WANTED_KINDS: ReadonlySet<SegmentKind> = new Set(['ready', 'starting', 'crashed', 'error']);

/** A stretch of time in one kind of state: [from, to), unix seconds. */
export interface Segment {
  kind: SegmentKind;
  from: number;
  to: number;
}

export interface Window {
  /** Unix seconds, inclusive. */
  from: number;
  /** Unix seconds; the window ends at `now` when this is later. */
  to: number;
}

/** A supervisor state's kind; a state this build does not know is `unknown`. */
export function segmentKind(status: string | null | undefined): SegmentKind {
  switch (status) {
    case 'ready':
      return 'ready';
    case 'checking':
    case 'starting':
      return 'starting';
    case 'crashed':
      return 'crashed';
    case 'error':
      return 'error';
    case 'initial':
    case 'stopping':
      return 'stopped';
    default:
      return 'unknown';
  }
}

export interface SegmentOptions {
  /**
   * The model's state now, as the live feed says (`llamaModels`' `state`). Used only when no
   * transition was recorded at all: a model that stayed in one state for longer than the
   * history fetched. Without it, such a window is `unknown`.
   */
  current?: string | null;
  /**
   * The transitions are complete only from this moment on (the list was cut to its newest
   * rows): earlier time is `unknown`, not the first transition's `from`.
   */
  knownSince?: number | null;
}

/**
 * The window [from, min(to, now)) cut into segments, oldest first, adjacent ones of the same
 * kind merged, none empty. `transitions` are one model's, in any order, and may reach before
 * the window (the last of those gives the state at its start).
 *
 * The state before the first transition is that transition's `from`. A transition whose
 * `from` is not the state the previous one led to means something went unrecorded between
 * them (llamaherd was stopped or killed): that stretch is `unknown`.
 */
export function uptimeSegments(
  transitions: readonly HistoryTransition[],
  window: Window,
  now: number,
  options: SegmentOptions = {},
): Segment[] {
  const start = window.from;
  const end = Math.min(window.to, now);
  if (!(end > start)) return [];
  const sorted = [...transitions].sort((a, b) => a.at - b.at);
  const knownSince = options.knownSince ?? null;

  const out: Segment[] = [];
  const push = (kind: SegmentKind, from: number, to: number) => {
    const a = Math.max(from, start);
    const b = Math.min(to, end);
    if (!(b > a)) return;
    const last = out[out.length - 1];
    if (last && last.kind === kind && last.to === a) last.to = b;
    else out.push({ kind, from: a, to: b });
  };

  const first = sorted[0];
  if (!first) {
    const current = options.current;
    push(current ? segmentKind(current) : 'unknown', start, end);
    return out;
  }
  // Before the first transition: its `from`, unless the list was cut and earlier is unknown.
  let cursor = -Infinity;
  let status = first.from;
  if (knownSince !== null) {
    push('unknown', start, knownSince);
    cursor = knownSince;
  }
  for (const t of sorted) {
    if (t.at > cursor) {
      push(status === t.from ? segmentKind(status) : 'unknown', cursor, t.at);
      cursor = t.at;
    }
    status = t.to;
  }
  push(segmentKind(status), cursor, end);
  return out;
}

export interface Availability {
  /** Seconds ready. */
  ready: number;
  /** Seconds wanted (ready, starting, crashed, error). */
  wanted: number;
  /** ready / wanted, 0..1; null when it was never wanted. */
  ratio: number | null;
}

/** See the module's docstring for the definition. */
export function availability(segments: readonly Segment[]): Availability {
  let ready = 0;
  let wanted = 0;
  for (const s of segments) {
    const span = s.to - s.from;
    if (s.kind === 'ready') ready += span;
    if (WANTED_KINDS.has(s.kind)) wanted += span;
  }
  return { ready, wanted, ratio: wanted > 0 ? ready / wanted : null };
}

/**
 * `99.95%`: two decimals, rounded down, so a window with one crash never shows as 100%;
 * `100%` only when it was ready all the time it was wanted; an em dash when never wanted.
 */
export function formatAvailability(ratio: number | null): string {
  if (ratio === null || !Number.isFinite(ratio)) return '—';
  if (ratio >= 1) return '100%';
  // The epsilon undoes binary fractions (0.5539 * 10000 is 5538.999…), not a real shortfall.
  const hundredths = Math.min(9999, Math.floor(Math.max(0, ratio) * 10000 + 1e-6));
  return `${(hundredths / 100).toFixed(2)}%`;
}

/** A restart: the server crashed (a transition into `crashed`), with what it said. */
export interface RestartMarker {
  at: number;
  exitCode: number | null;
  signal: string | null;
  reason: string | null;
}

/** The transitions into `crashed` within [from, min(to, now)], oldest first. */
export function restartMarkers(transitions: readonly HistoryTransition[], window: Window, now: number): RestartMarker[] {
  const end = Math.min(window.to, now);
  return transitions
    .filter((t) => t.to === 'crashed' && t.at >= window.from && t.at <= end)
    .sort((a, b) => a.at - b.at)
    .map((t) => ({ at: t.at, exitCode: t.exitCode, signal: t.signal, reason: t.reason }));
}

/** `killed by SIGKILL`, `exit code 1`, or empty when the crash recorded neither. */
export function exitText(m: Pick<RestartMarker, 'exitCode' | 'signal'>): string {
  if (m.signal) return `killed by ${m.signal}`;
  if (m.exitCode !== null) return `exit code ${m.exitCode}`;
  return '';
}
