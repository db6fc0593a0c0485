import Box from '@mui/material/Box';
import Tooltip from '@mui/material/Tooltip';
import { exitText, type RestartMarker, type Segment, type Window } from '../../lib/uptime';
import { formatShortDateTime, formatUptime } from '../../utils/format';
import { KIND_LOOK } from './uptimeLook';

export interface UptimeBarProps {
  segments: readonly Segment[];
  /** The window drawn, unix seconds; `to` is now. */
  window: Window;
  markers: readonly RestartMarker[];
  /** `24h` or `7d`: carried as `data-window`. */
  name: string;
  /** ms, for the tooltips' dates. */
  nowMs: number;
}

const pct = (v: number) => `${(Math.min(1, Math.max(0, v)) * 100).toFixed(4)}%`;

/**
 * A model's states over a window as one bar of coloured segments (see `uptimeLook`), with a
 * tick above it for every restart (a crash), its exit in the tooltip. Short segments of
 * trouble keep at least 2 px, so a one-second crash in a week still shows.
 */
export function UptimeBar({ segments, window, markers, name, nowMs }: UptimeBarProps) {
  const span = window.to - window.from;
  const at = (t: number) => (span > 0 ? (t - window.from) / span : 0);
  return (
    <Box sx={{ position: 'relative', pt: '8px' }} data-testid="uptime-bar" data-window={name}>
      <Box
        sx={{ position: 'relative', height: 18, borderRadius: 1, overflow: 'hidden', border: 1, borderColor: 'divider' }}
        role="img"
        aria-label={`states over the last ${name}`}
      >
        {segments.map((s) => {
          const look = KIND_LOOK[s.kind];
          const title = `${look.label}: ${formatShortDateTime(s.from, nowMs)} – ${formatShortDateTime(s.to, nowMs)} (${formatUptime(s.to - s.from)})`;
          const small = s.kind === 'ready' || s.kind === 'stopped' || s.kind === 'unknown' ? 0 : 2;
          return (
            <Tooltip key={`${s.kind}-${s.from}`} title={title} disableInteractive>
              <Box
                data-testid="uptime-segment"
                data-kind={s.kind}
                data-from={s.from}
                data-to={s.to}
                // Inline: a class per position would grow the style sheet with every refresh.
                style={{ left: pct(at(s.from)), width: pct(at(s.to) - at(s.from)), minWidth: small }}
                sx={[
                  { position: 'absolute', top: 0, bottom: 0 },
                  ...(Array.isArray(look.sx) ? look.sx : [look.sx]),
                ]}
              />
            </Tooltip>
          );
        })}
      </Box>
      {markers.map((m) => {
        const exit = exitText(m);
        return (
          <Tooltip key={`restart-${m.at}`} title={`restart at ${formatShortDateTime(m.at, nowMs)}${exit ? `: ${exit}` : ''}`}>
            <Box
              data-testid="restart-marker"
              data-at={m.at}
              data-exit={exit}
              aria-label={`restart at ${formatShortDateTime(m.at, nowMs)}${exit ? `: ${exit}` : ''}`}
              role="img"
              style={{ left: pct(at(m.at)) }}
              sx={{
                position: 'absolute',
                top: 0,
                transform: 'translateX(-50%)',
                width: 0,
                height: 0,
                borderLeft: '5px solid transparent',
                borderRight: '5px solid transparent',
                borderTop: (theme) => `7px solid ${theme.palette.error.main}`,
              }}
            />
          </Tooltip>
        );
      })}
    </Box>
  );
}
