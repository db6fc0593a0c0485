import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Stack from '@mui/material/Stack';
import Typography from '@mui/material/Typography';
import { useMemo } from 'react';
import {
  availability,
  formatAvailability,
  restartMarkers,
  uptimeSegments,
  type Availability,
  type RestartMarker,
  type Segment,
  type Window,
} from '../../lib/uptime';
import type { HistoryTransition } from '../../types/history';
import { formatUptime } from '../../utils/format';
import { UptimeBar } from './UptimeBar';
import { KIND_LOOK, KIND_ORDER } from './uptimeLook';

const DAY_S = 86_400;
/** The windows each model gets a bar for. */
export const UPTIME_WINDOWS: ReadonlyArray<{ name: string; label: string; seconds: number }> = [
  { name: '24h', label: '24 h', seconds: DAY_S },
  { name: '7d', label: '7 d', seconds: 7 * DAY_S },
];

export interface UptimeCardProps {
  /** Every model, with its state now (for a model that had no transition in the window). */
  models: ReadonlyArray<{ id: string; state: string }>;
  /** Every model's transitions, as fetched. */
  transitions: readonly HistoryTransition[];
  /** The list is complete only from this moment (it was cut to its newest rows), or null. */
  knownSince: number | null;
  /** Now on the server's clock, unix seconds. */
  now: number;
}

interface Row {
  window: Window;
  name: string;
  label: string;
  segments: Segment[];
  availability: Availability;
  markers: RestartMarker[];
}

export const AVAILABILITY_DEFINITION =
  'Availability = time ready ÷ time wanted. Wanted: ready, starting, crashed or error; ' +
  'time stopped (not loaded, unloaded, stopped by hand) or with no record counts neither way.';

export function UptimeLegend() {
  return (
    <Box data-testid="uptime-legend">
      <Stack direction="row" spacing={1.5} useFlexGap sx={{ flexWrap: 'wrap', alignItems: 'center' }}>
        {KIND_ORDER.map((kind) => {
          const look = KIND_LOOK[kind];
          return (
            <Stack key={kind} direction="row" spacing={0.5} sx={{ alignItems: 'center' }}>
              <Box
                sx={[
                  { width: 12, height: 12, borderRadius: 0.5, border: 1, borderColor: 'divider' },
                  ...(Array.isArray(look.sx) ? look.sx : [look.sx]),
                ]}
              />
              <Typography variant="caption">{look.label}</Typography>
            </Stack>
          );
        })}
        <Stack direction="row" spacing={0.5} sx={{ alignItems: 'center' }}>
          <Box
            sx={{
              width: 0,
              height: 0,
              borderLeft: '5px solid transparent',
              borderRight: '5px solid transparent',
              borderTop: (theme) => `7px solid ${theme.palette.error.main}`,
            }}
          />
          <Typography variant="caption">restart</Typography>
        </Stack>
      </Stack>
      <Typography variant="caption" color="text.secondary" component="p" sx={{ mt: 0.5 }} data-testid="availability-definition">
        {AVAILABILITY_DEFINITION}
      </Typography>
    </Box>
  );
}

function ModelUptime({ id, rows, nowMs }: { id: string; rows: Row[]; nowMs: number }) {
  const day = rows[0];
  return (
    <Box data-testid="uptime-row" data-model-id={id}>
      <Stack direction="row" spacing={1} sx={{ alignItems: 'baseline', mb: 0.5 }}>
        <Typography variant="subtitle2" component="h3" sx={{ wordBreak: 'break-all' }}>
          {id}
        </Typography>
        <Typography variant="caption" color="text.secondary" data-testid="restart-count">
          {day ? `${day.markers.length} restart${day.markers.length === 1 ? '' : 's'} in 24 h` : ''}
        </Typography>
      </Stack>
      <Stack spacing={0.5}>
        {rows.map((r) => (
          <Box
            key={r.name}
            sx={{ display: 'grid', gridTemplateColumns: '2.5rem minmax(0, 1fr) 4.5rem', columnGap: 1, alignItems: 'end' }}
          >
            <Typography variant="caption" color="text.secondary" sx={{ pb: '1px' }}>
              {r.label}
            </Typography>
            <UptimeBar segments={r.segments} window={r.window} markers={r.markers} name={r.name} nowMs={nowMs} />
            <Typography
              variant="body2"
              sx={{ textAlign: 'right', fontVariantNumeric: 'tabular-nums', fontWeight: 600 }}
              data-testid="availability"
              data-window={r.name}
              title={
                r.availability.ratio === null
                  ? 'not wanted in this window'
                  : `ready ${formatUptime(r.availability.ready)} of ${formatUptime(r.availability.wanted)} wanted`
              }
            >
              {formatAvailability(r.availability.ratio)}
            </Typography>
          </Box>
        ))}
      </Stack>
    </Box>
  );
}

/** Every model's uptime over the last 24 hours and 7 days, with its availability and restarts. */
export function UptimeCard({ models, transitions, knownSince, now }: UptimeCardProps) {
  const perModel = useMemo(() => {
    const byModel = new Map<string, HistoryTransition[]>();
    for (const t of transitions) byModel.set(t.model, [...(byModel.get(t.model) ?? []), t]);
    return models.map((m) => {
      const own = byModel.get(m.id) ?? [];
      const rows: Row[] = UPTIME_WINDOWS.map((w) => {
        const window = { from: now - w.seconds, to: now };
        const segments = uptimeSegments(own, window, now, { current: m.state, knownSince });
        return {
          window,
          name: w.name,
          label: w.label,
          segments,
          availability: availability(segments),
          markers: restartMarkers(own, window, now),
        };
      });
      return { id: m.id, rows };
    });
  }, [models, transitions, knownSince, now]);

  return (
    <Card variant="outlined" data-testid="uptime-card">
      <CardContent>
        <Typography variant="h6" component="h2" sx={{ mb: 1 }}>
          Uptime
        </Typography>
        <Stack spacing={2}>
          {perModel.length === 0 ? (
            <Typography variant="body2" color="text.secondary">
              No models configured.
            </Typography>
          ) : (
            perModel.map((m) => <ModelUptime key={m.id} id={m.id} rows={m.rows} nowMs={now * 1000} />)
          )}
          <UptimeLegend />
        </Stack>
      </CardContent>
    </Card>
  );
}
