const BYTE_UNITS = ['KiB', 'MiB', 'GiB', 'TiB', 'PiB', 'EiB'] as const;

/**
 * Human-readable binary size: `512 B`, `512.0 KiB`, `4.0 GiB`.
 * Invalid input (negative, NaN, not a number) gives an em dash.
 */
export function formatBytes(bytes: number | null | undefined): string {
  if (typeof bytes !== 'number' || !Number.isFinite(bytes) || bytes < 0) return '—';
  if (bytes < 1024) return `${Math.round(bytes)} B`;
  let value = bytes;
  let unit: string = BYTE_UNITS[0];
  for (const u of BYTE_UNITS) {
    value /= 1024;
    unit = u;
    // Stop before rounding would print "1024.0".
    if (value < 1023.95) break;
  }
  return `${value.toFixed(1)} ${unit}`;
}

const pad2 = (n: number): string => String(n).padStart(2, '0');

/**
 * Human-readable duration from seconds: `5s`, `2m 03s`, `1h 02m 03s`, `3d 04h 05m 06s`.
 * Fractions are floored; invalid or negative input counts as 0.
 */
export function formatUptime(seconds: number | null | undefined): string {
  const total =
    typeof seconds === 'number' && Number.isFinite(seconds) && seconds > 0
      ? Math.floor(seconds)
      : 0;
  const d = Math.floor(total / 86400);
  const h = Math.floor((total % 86400) / 3600);
  const m = Math.floor((total % 3600) / 60);
  const s = total % 60;
  if (d > 0) return `${d}d ${pad2(h)}h ${pad2(m)}m ${pad2(s)}s`;
  if (h > 0) return `${h}h ${pad2(m)}m ${pad2(s)}s`;
  if (m > 0) return `${m}m ${pad2(s)}s`;
  return `${s}s`;
}

/** Local date-time for an ISO string or unix seconds; an em dash when missing/invalid. */
export function formatDateTime(value: string | number | null | undefined): string {
  if (value === null || value === undefined || value === '') return '—';
  const ms = typeof value === 'number' ? value * 1000 : Date.parse(value);
  if (!Number.isFinite(ms)) return '—';
  return new Date(ms).toLocaleString();
}

/**
 * Compact local date-time: the time alone when it is today, else a short date
 * and time. An em dash when missing/invalid.
 */
export function formatShortDateTime(
  value: string | number | null | undefined,
  now: number = Date.now(),
): string {
  if (value === null || value === undefined || value === '') return '—';
  const ms = typeof value === 'number' ? value * 1000 : Date.parse(value);
  if (!Number.isFinite(ms)) return '—';
  const date = new Date(ms);
  if (date.toDateString() === new Date(now).toDateString()) return date.toLocaleTimeString();
  return date.toLocaleString(undefined, { dateStyle: 'short', timeStyle: 'short' });
}

/** `exit code 1`, `killed by SIGKILL`, or both; empty when unknown. */
export function formatExit(exit: { code: number | null; signal: string | null } | null | undefined): string {
  if (!exit) return '';
  const parts: string[] = [];
  if (exit.signal) parts.push(`killed by ${exit.signal}`);
  if (exit.code !== null && exit.code !== undefined) parts.push(`exit code ${exit.code}`);
  return parts.join(', ');
}

/**
 * How long ago a moment (ms since the epoch) was: `just now`, `12 s ago`, `3 min ago`,
 * `2 h ago`, `5 d ago`; an em dash when missing. A moment in the future (a few ms of
 * rounding) counts as now.
 */
export function formatAgo(at: number | null | undefined, now: number = Date.now()): string {
  if (typeof at !== 'number' || !Number.isFinite(at)) return '—';
  const s = Math.max(0, Math.floor((now - at) / 1000));
  if (s < 1) return 'just now';
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return `${Math.floor(s / 86400)} d ago`;
}
