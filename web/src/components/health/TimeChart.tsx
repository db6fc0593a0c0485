import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Typography from '@mui/material/Typography';
import { LineChart } from '@mui/x-charts/LineChart';
import { ScatterChart } from '@mui/x-charts/ScatterChart';
import type { ReactNode } from 'react';

export const CHART_HEIGHT = 220;
/** With this many points or fewer, each gets a mark: a lone minute is a dot, not nothing. */
const MARKS_UP_TO = 90;

export interface TimeSeries {
  label: string;
  values: ReadonlyArray<number | null>;
  color?: string;
}

export interface TimeChartProps {
  /** `data-testid` of the card. */
  testId: string;
  title: string;
  /** ms since the epoch, one per value of every series. */
  times: readonly number[];
  series: readonly TimeSeries[];
  /** The time axis, ms. */
  from: number;
  to: number;
  /** A value on the y axis and in the tooltip. */
  format: (value: number) => string;
  /** Fixed width (tests: jsdom measures nothing); fills its card otherwise. */
  width?: number;
  empty?: ReactNode;
  caption?: ReactNode;
}

/** `14:03` within a day, `26/12 14:03` across days. */
export function timeTick(from: number, to: number): (value: Date) => string {
  const days = to - from > 86_400_000;
  return (value) =>
    days
      ? value.toLocaleString(undefined, { day: '2-digit', month: '2-digit', hour: '2-digit', minute: '2-digit' })
      : value.toLocaleTimeString(undefined, { hour: '2-digit', minute: '2-digit' });
}

function ChartCard({ testId, title, points, caption, children }: { testId: string; title: string; points: number; caption?: ReactNode; children: ReactNode }) {
  return (
    <Card variant="outlined" data-testid={testId} data-points={points} sx={{ height: '100%' }}>
      <CardContent sx={{ px: { xs: 1, sm: 2 }, '&:last-child': { pb: 1 } }}>
        <Typography variant="subtitle2" component="h3">
          {title}
        </Typography>
        {caption ? (
          <Typography variant="caption" color="text.secondary" component="div">
            {caption}
          </Typography>
        ) : null}
        {children}
      </CardContent>
    </Card>
  );
}

function Empty({ children }: { children: ReactNode }) {
  return (
    <Box sx={{ height: CHART_HEIGHT, display: 'grid', placeItems: 'center' }} data-testid="chart-empty">
      <Typography variant="body2" color="text.secondary" sx={{ textAlign: 'center', px: 2 }}>
        {children}
      </Typography>
    </Box>
  );
}

/** Lines over time (MUI X LineChart on a time axis); gaps where a value is null. */
export function TimeChart({ testId, title, times, series, from, to, format, width, empty, caption }: TimeChartProps) {
  const points = series.reduce((n, s) => n + s.values.filter((v) => v !== null).length, 0);
  const tick = timeTick(from, to);
  return (
    <ChartCard testId={testId} title={title} points={points} caption={caption}>
      {points === 0 ? (
        <Empty>{empty ?? 'No data in this range yet.'}</Empty>
      ) : (
        <LineChart
          height={CHART_HEIGHT}
          {...(width !== undefined ? { width } : {})}
          skipAnimation
          margin={{ left: 4, right: 12, top: 8, bottom: 4 }}
          xAxis={[
            {
              data: times.map((t) => new Date(t)),
              scaleType: 'time',
              min: new Date(from),
              max: new Date(to),
              valueFormatter: (value: Date) => tick(value),
            },
          ]}
          yAxis={[{ min: 0, valueFormatter: (value: number) => format(value), width: 56 }]}
          series={series.map((s) => ({
            label: s.label,
            data: [...s.values],
            ...(s.color ? { color: s.color } : {}),
            showMark: s.values.length <= MARKS_UP_TO,
            valueFormatter: (value: number | null) => (value === null ? '—' : format(value)),
          }))}
          slotProps={{ legend: { direction: 'horizontal', position: { vertical: 'top', horizontal: 'end' } } }}
          hideLegend={series.length < 2}
        />
      )}
    </ChartCard>
  );
}

export interface ScatterPoint {
  /** ms since the epoch. */
  x: number;
  y: number;
}

export interface TimeScatterProps {
  testId: string;
  title: string;
  points: readonly ScatterPoint[];
  label: string;
  from: number;
  to: number;
  format: (value: number) => string;
  width?: number;
  empty?: ReactNode;
  caption?: ReactNode;
  color?: string;
}

/** Dots over time (MUI X ScatterChart on a time axis). */
export function TimeScatter({ testId, title, points, label, from, to, format, width, empty, caption, color }: TimeScatterProps) {
  const tick = timeTick(from, to);
  return (
    <ChartCard testId={testId} title={title} points={points.length} caption={caption}>
      {points.length === 0 ? (
        <Empty>{empty ?? 'No data in this range yet.'}</Empty>
      ) : (
        <ScatterChart
          height={CHART_HEIGHT}
          {...(width !== undefined ? { width } : {})}
          skipAnimation
          margin={{ left: 4, right: 12, top: 8, bottom: 4 }}
          xAxis={[{ scaleType: 'time', min: new Date(from), max: new Date(to), valueFormatter: (value: Date) => tick(value) }]}
          yAxis={[{ min: 0, valueFormatter: (value: number) => format(value), width: 56 }]}
          series={[
            {
              label,
              data: points.map((p, i) => ({ x: p.x, y: p.y, id: i })),
              ...(color ? { color } : {}),
              valueFormatter: (value) => (value ? `${format(value.y)} at ${new Date(value.x).toLocaleString()}` : ''),
            },
          ]}
          hideLegend
        />
      )}
    </ChartCard>
  );
}
