import { describe, expect, it } from 'vitest';
import { formatAgo, formatBytes, formatDateTime, formatExit, formatShortDateTime, formatUptime } from './format';

describe('formatBytes', () => {
  it.each([
    [0, '0 B'],
    [1, '1 B'],
    [1023, '1023 B'],
    [1024, '1.0 KiB'],
    [1536, '1.5 KiB'],
    [524288, '512.0 KiB'],
    [1048576, '1.0 MiB'],
    [4294967296, '4.0 GiB'],
    [4.5 * 1024 ** 3, '4.5 GiB'],
    [1024 ** 4, '1.0 TiB'],
    [1024 ** 2 - 1, '1.0 MiB'],
  ])('formats %d bytes as %s', (input, expected) => {
    expect(formatBytes(input)).toBe(expected);
  });

  it.each([[-1], [Number.NaN], [Number.POSITIVE_INFINITY], [null], [undefined]])(
    'gives a dash for %s',
    (input) => {
      expect(formatBytes(input)).toBe('—');
    },
  );
});

describe('formatUptime', () => {
  it.each([
    [0, '0s'],
    [5, '5s'],
    [59.9, '59s'],
    [60, '1m 00s'],
    [123, '2m 03s'],
    [3600, '1h 00m 00s'],
    [3723, '1h 02m 03s'],
    [86399, '23h 59m 59s'],
    [86400 + 4 * 3600 + 5 * 60 + 6, '1d 04h 05m 06s'],
  ])('formats %d seconds as %s', (input, expected) => {
    expect(formatUptime(input)).toBe(expected);
  });

  it('treats invalid and negative input as zero', () => {
    expect(formatUptime(-10)).toBe('0s');
    expect(formatUptime(Number.NaN)).toBe('0s');
    expect(formatUptime(null)).toBe('0s');
    expect(formatUptime(undefined)).toBe('0s');
  });
});

describe('formatDateTime', () => {
  it('formats ISO strings and unix seconds', () => {
    const iso = '2025-12-26T10:00:00Z';
    expect(formatDateTime(iso)).toBe(new Date(iso).toLocaleString());
    expect(formatDateTime(1234567890)).toBe(new Date(1234567890 * 1000).toLocaleString());
  });

  it('gives a dash for missing or invalid values', () => {
    expect(formatDateTime(null)).toBe('—');
    expect(formatDateTime(undefined)).toBe('—');
    expect(formatDateTime('')).toBe('—');
    expect(formatDateTime('not a date')).toBe('—');
  });
});

describe('formatShortDateTime', () => {
  const now = Date.parse('2025-12-26T12:00:00Z');
  it('shows only the time for today', () => {
    const iso = '2025-12-26T11:30:00Z';
    expect(formatShortDateTime(iso, now)).toBe(new Date(iso).toLocaleTimeString());
  });
  it('shows a short date and time for other days', () => {
    const iso = '2025-01-02T03:04:05Z';
    expect(formatShortDateTime(iso, now)).toBe(
      new Date(iso).toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' }),
    );
  });
  it('gives a dash for missing or invalid values', () => {
    expect(formatShortDateTime(null, now)).toBe('—');
    expect(formatShortDateTime('nope', now)).toBe('—');
  });
});

describe('formatExit', () => {
  it('describes how the process ended', () => {
    expect(formatExit({ code: 1, signal: null })).toBe('exit code 1');
    expect(formatExit({ code: null, signal: 'SIGKILL' })).toBe('killed by SIGKILL');
    expect(formatExit({ code: -9, signal: 'SIGKILL' })).toBe('killed by SIGKILL, exit code -9');
    expect(formatExit(null)).toBe('');
    expect(formatExit({ code: null, signal: null })).toBe('');
  });
});

describe('formatAgo', () => {
  const now = Date.parse('2025-12-26T11:00:00Z');
  it.each([
    [now, 'just now'],
    [now + 500, 'just now'],
    [now - 999, 'just now'],
    [now - 12_000, '12 s ago'],
    [now - 59_999, '59 s ago'],
    [now - 60_000, '1 min ago'],
    [now - 3_599_000, '59 min ago'],
    [now - 7_200_000, '2 h ago'],
    [now - 5 * 86_400_000, '5 d ago'],
  ])('%d is %s', (at, expected) => {
    expect(formatAgo(at, now)).toBe(expected);
  });

  it('gives an em dash when there is no moment', () => {
    expect(formatAgo(null, now)).toBe('—');
    expect(formatAgo(Number.NaN, now)).toBe('—');
  });
});
