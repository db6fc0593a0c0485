/** Keep the last `max` lines. */
export function capLines(lines: string[], max: number): string[] {
  return lines.length > max ? lines.slice(lines.length - max) : lines;
}

function sameRange(a: string[], aStart: number, b: string[], bStart: number, n: number): boolean {
  for (let i = 0; i < n; i += 1) {
    if (a[aStart + i] !== b[bStart + i]) return false;
  }
  return true;
}

/**
 * Append `next` to `prev`, dropping the lines of `next` that `prev` already ends
 * with: used when a fetched tail and live lines (or a tail fetched after a
 * reconnect and what is on screen) overlap.
 *
 * - `next` starts inside `prev`'s end: only the new part is appended.
 * - `next` contains all of `prev`: `next` alone.
 * - no overlap (a gap, or a fresh log after llamaherd restarted): both, in order.
 */
export function appendOverlapping(prev: string[], next: string[]): string[] {
  if (prev.length === 0) return next.slice();
  if (next.length === 0) return prev.slice();
  for (let o = Math.min(prev.length, next.length); o > 0; o -= 1) {
    if (sameRange(prev, prev.length - o, next, 0, o)) return prev.concat(next.slice(o));
  }
  if (prev.length < next.length) {
    for (let j = 1; j + prev.length <= next.length; j += 1) {
      if (sameRange(prev, 0, next, j, prev.length)) return next.slice();
    }
  }
  return prev.concat(next);
}
