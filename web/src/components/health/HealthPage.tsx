import Alert from '@mui/material/Alert';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Grid from '@mui/material/Grid';
import Skeleton from '@mui/material/Skeleton';
import Stack from '@mui/material/Stack';
import { useTheme } from '@mui/material/styles';
import TextField from '@mui/material/TextField';
import ToggleButton from '@mui/material/ToggleButton';
import ToggleButtonGroup from '@mui/material/ToggleButtonGroup';
import Typography from '@mui/material/Typography';
import { useMemo, useState } from 'react';
import type { FetchLike } from '../../api/client';
import { useHistory } from '../../hooks/useHistory';
import { useNow } from '../../hooks/useNow';
import { chartPoints, knownSince } from '../../lib/history';
import { formatRate, formatSlots, type LivePoint } from '../../lib/metrics';
import { restartMarkers } from '../../lib/uptime';
import type { ModelMetrics } from '../../types/metrics';
import { formatBytes } from '../../utils/format';
import { RequestsTable } from './RequestsTable';
import { RestartsList } from './RestartsList';
import { TimeChart, TimeScatter } from './TimeChart';
import { UptimeCard } from './UptimeCard';

const HOUR_S = 3600;
const WEEK_S = 7 * 24 * HOUR_S;
/** Rows per list of the every-model query (transitions, starts and requests of 7 days). */
export const OVERVIEW_LIMIT = 1000;
/** Rows per list of the chosen model's query: a minute row each, for up to 24 hours. */
export const DETAIL_LIMIT = 1500;
export const RANGES: ReadonlyArray<{ label: string; seconds: number }> = [
  { label: '1 h', seconds: HOUR_S },
  { label: '6 h', seconds: 6 * HOUR_S },
  { label: '24 h', seconds: 24 * HOUR_S },
];

export interface HealthPageProps {
  /** Every model, with its supervisor state now (`llamaModels`). */
  models: ReadonlyArray<{ id: string; state: string; default: boolean }>;
  modelsLoading?: boolean;
  /** The live figures (`llamaMetrics`). */
  metrics: Readonly<Record<string, ModelMetrics>>;
  livePoints: Readonly<Record<string, readonly LivePoint[]>>;
  /** Server clock minus local clock, ms. */
  clockOffsetMs?: number;
  /** The model the charts detail (from the route), or null for the default one. */
  selected: string | null;
  onSelect: (id: string) => void;
  /** Fetch and tick only while shown. */
  active?: boolean;
  fetchImpl?: FetchLike;
  /** Injected in tests. */
  intervalMs?: number;
  chartWidth?: number;
}

const mib = (bytes: number) => `${(bytes / 1048576).toFixed(bytes < 10 * 1048576 ? 1 : 0)} MiB`;
const msText = (v: number) => (v >= 1000 ? `${(v / 1000).toFixed(v >= 10_000 ? 0 : 1)} s` : `${Math.round(v)} ms`);
const seconds = (v: number) => `${v < 10 ? v.toFixed(2) : v.toFixed(1)} s`;

function LiveStrip({ m }: { m: ModelMetrics | undefined }) {
  if (!m) return null;
  const items: Array<[string, string, string]> = [
    ['speed, last minute', formatRate(m.tokensPerSecond), 'health-now-tps'],
    ['latency p50, last minute', m.latencyP50Ms === null ? '—' : msText(m.latencyP50Ms), 'health-now-latency'],
    ['memory now', formatBytes(m.memory.rssBytes), 'health-now-memory'],
    ['slots busy now', formatSlots(m.slotsBusy, m.slotsTotal), 'health-now-slots'],
    ['requests since start', `${m.requests.total} · ${m.requests.errors} failed`, 'health-now-requests'],
  ];
  return (
    <Stack direction="row" spacing={3} useFlexGap sx={{ flexWrap: 'wrap' }} data-testid="health-now">
      {items.map(([label, value, id]) => (
        <div key={id}>
          <Typography variant="caption" color="text.secondary" component="div">
            {label}
          </Typography>
          <Typography variant="body2" sx={{ fontWeight: 600, fontVariantNumeric: 'tabular-nums' }} data-testid={id}>
            {value}
          </Typography>
        </div>
      ))}
    </Stack>
  );
}

/**
 * The health view: every model's uptime (24 h, 7 d) with restarts, then the chosen model's
 * charts (tokens/s, latency, memory, load times) and restarts, and the recent requests.
 *
 * History comes from `GET /api/history`, fetched every ~10 s while shown and at once when a
 * model's state changes; the charts continue past the last recorded minute with the live
 * `llamaMetrics` readings, and show those alone when history is switched off.
 */
export function HealthPage({
  models,
  modelsLoading = false,
  metrics,
  livePoints,
  clockOffsetMs = 0,
  selected,
  onSelect,
  active = true,
  fetchImpl,
  intervalMs,
  chartWidth,
}: HealthPageProps) {
  const theme = useTheme();
  const [range, setRange] = useState(RANGES[0]?.seconds ?? HOUR_S);
  const stateKey = models.map((m) => `${m.id}:${m.state}`).join('|');
  const chosen = models.find((m) => m.id === selected)?.id ?? models.find((m) => m.default)?.id ?? models[0]?.id ?? null;

  const overview = useHistory({
    active,
    windowS: WEEK_S,
    limit: OVERVIEW_LIMIT,
    refreshKey: stateKey,
    clockOffsetMs,
    ...(intervalMs !== undefined ? { intervalMs } : {}),
    fetchImpl,
  });
  const detail = useHistory({
    active: active && chosen !== null && !overview.disabled,
    model: chosen,
    windowS: range,
    limit: DETAIL_LIMIT,
    refreshKey: stateKey,
    clockOffsetMs,
    ...(intervalMs !== undefined ? { intervalMs } : {}),
    fetchImpl,
  });

  // The clock ticks every 5 s; a live reading that came since still belongs on the charts.
  const live = chosen ? livePoints[chosen] : undefined;
  const nowMs = Math.max(useNow(active, 5000) + clockOffsetMs, live?.[live.length - 1]?.at ?? 0);
  const now = nowMs / 1000;
  const history = overview.history;
  const transitions = useMemo(() => history?.transitions ?? [], [history]);
  const complete = history && overview.since !== null ? knownSince(transitions, overview.limit, overview.since) : null;

  const points = useMemo(
    () => (chosen ? chartPoints(detail.history?.minutes ?? [], livePoints[chosen] ?? [], chosen, now - range, now) : []),
    [chosen, detail.history, livePoints, now, range],
  );
  const times = points.map((p) => p.t);
  const from = (now - range) * 1000;
  const starts = (history?.starts ?? []).filter((s) => s.model === chosen && s.at >= now - WEEK_S);
  const loads = starts.filter((s) => s.ok && s.loadTimeS !== null).map((s) => ({ x: s.at * 1000, y: s.loadTimeS ?? 0 }));
  const failedStarts = starts.filter((s) => !s.ok).length;
  const restarts = chosen ? restartMarkers(transitions.filter((t) => t.model === chosen), { from: now - WEEK_S, to: now }, now) : [];
  const warning = history?.store.warning ?? null;
  const error = overview.error ?? detail.error;
  const waiting = !overview.disabled && history === null && error === null;

  return (
    <Stack spacing={2} data-testid="health-page">
      {overview.disabled ? (
        <Alert severity="info" data-testid="history-disabled">
          History is switched off (<code>history_enabled: false</code> in the config), so there are no uptime bars,
          restarts or past requests. The charts show the live figures since this page was opened.
        </Alert>
      ) : null}
      {warning ? (
        <Alert severity="warning" data-testid="store-warning">
          {warning}
        </Alert>
      ) : null}
      {error ? (
        <Alert severity="error" data-testid="history-error">
          Could not fetch the history: {error}
          {history ? ' (showing what was fetched before)' : ''}
        </Alert>
      ) : null}

      {overview.disabled ? null : waiting || modelsLoading ? (
        <Skeleton variant="rounded" height={160} data-testid="health-loading" />
      ) : (
        <UptimeCard models={models} transitions={transitions} knownSince={complete} now={now} />
      )}

      {chosen === null ? null : (
        <Card variant="outlined" data-testid="health-model-card">
          <CardContent sx={{ px: { xs: 1, sm: 2 } }}>
            <Stack
              direction={{ xs: 'column', sm: 'row' }}
              spacing={1}
              useFlexGap
              sx={{ alignItems: { xs: 'stretch', sm: 'center' }, mb: 2, px: { xs: 1, sm: 0 } }}
            >
              <Typography variant="h6" component="h2" sx={{ flexGrow: 1 }}>
                Performance
              </Typography>
              <TextField
                select
                size="small"
                label="Model"
                value={chosen}
                onChange={(e) => onSelect(e.target.value)}
                slotProps={{ select: { native: true }, htmlInput: { 'data-testid': 'health-model' }, inputLabel: { shrink: true } }}
                sx={{ minWidth: 160 }}
              >
                {models.map((m) => (
                  <option key={m.id} value={m.id}>
                    {m.id}
                  </option>
                ))}
              </TextField>
              <ToggleButtonGroup
                size="small"
                exclusive
                value={range}
                onChange={(_e, v: number | null) => {
                  if (v !== null) setRange(v);
                }}
                aria-label="time range"
                data-testid="health-range"
              >
                {RANGES.map((r) => (
                  <ToggleButton key={r.seconds} value={r.seconds} aria-label={`last ${r.label}`}>
                    {r.label}
                  </ToggleButton>
                ))}
              </ToggleButtonGroup>
            </Stack>
            <Stack spacing={2}>
              <LiveStrip m={metrics[chosen]} />
              <Grid container spacing={2}>
                <Grid size={{ xs: 12, md: 6 }}>
                  <TimeChart
                    testId="chart-tps"
                    title="Generation speed (tokens/s)"
                    times={times}
                    series={[{ label: 'tokens/s', values: points.map((p) => p.tokensPerSecond), color: theme.palette.primary.main }]}
                    from={from}
                    to={nowMs}
                    format={(v) => v.toFixed(v >= 100 ? 0 : 1)}
                    width={chartWidth}
                    empty="No request answered in this range."
                  />
                </Grid>
                <Grid size={{ xs: 12, md: 6 }}>
                  <TimeChart
                    testId="chart-latency"
                    title="Latency"
                    times={times}
                    series={[
                      { label: 'p50', values: points.map((p) => p.latencyP50Ms), color: theme.palette.info.main },
                      { label: 'p95', values: points.map((p) => p.latencyP95Ms), color: theme.palette.warning.main },
                    ]}
                    from={from}
                    to={nowMs}
                    format={msText}
                    width={chartWidth}
                    empty="No request answered in this range."
                  />
                </Grid>
                <Grid size={{ xs: 12, md: 6 }}>
                  <TimeChart
                    testId="chart-memory"
                    title="Memory (resident)"
                    times={times}
                    series={[{ label: 'RSS', values: points.map((p) => p.rssBytes), color: theme.palette.secondary.main }]}
                    from={from}
                    to={nowMs}
                    format={mib}
                    width={chartWidth}
                    empty="Not running in this range."
                  />
                </Grid>
                <Grid size={{ xs: 12, md: 6 }}>
                  <TimeScatter
                    testId="chart-load-times"
                    title="Load times (7 days)"
                    label="load time"
                    points={loads}
                    from={(now - WEEK_S) * 1000}
                    to={nowMs}
                    format={seconds}
                    width={chartWidth}
                    color={theme.palette.success.main}
                    caption={failedStarts > 0 ? `${failedStarts} start${failedStarts === 1 ? '' : 's'} failed` : undefined}
                    empty={overview.disabled ? 'Needs the history.' : 'No start in the last 7 days.'}
                  />
                </Grid>
                {overview.disabled ? null : (
                  <Grid size={12}>
                    <RestartsList model={chosen} restarts={restarts} nowMs={nowMs} />
                  </Grid>
                )}
              </Grid>
            </Stack>
          </CardContent>
        </Card>
      )}

      {overview.disabled || !history ? null : (
        <RequestsTable requests={history.requests} modelIds={models.map((m) => m.id)} nowMs={nowMs} />
      )}
    </Stack>
  );
}
