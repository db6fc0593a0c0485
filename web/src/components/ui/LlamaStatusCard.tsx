import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Chip, { type ChipProps } from '@mui/material/Chip';
import CircularProgress from '@mui/material/CircularProgress';
import Divider from '@mui/material/Divider';
import List from '@mui/material/List';
import ListItem from '@mui/material/ListItem';
import ListItemText from '@mui/material/ListItemText';
import Skeleton from '@mui/material/Skeleton';
import Stack from '@mui/material/Stack';
import Tooltip from '@mui/material/Tooltip';
import Typography from '@mui/material/Typography';
import { useEffect, useState, type ReactNode } from 'react';
import {
  DEFAULT_MAX_RETRIES,
  type LlamaExit,
  type LlamaModel,
  type LlamaServiceStatus,
} from '../../types/llama';
import {
  formatBytes,
  formatDateTime,
  formatExit,
  formatShortDateTime,
  formatUptime,
} from '../../utils/format';
import { LastOutput } from './LastOutput';

export interface LlamaStatusCardProps {
  status: LlamaServiceStatus;
  models: LlamaModel[];
  lastError: string | null;
  retries: number;
  maxRetries?: number;
  /** Seconds. */
  uptime: number;
  startedAt?: string | null;
  adopted?: boolean;
  pid?: number | null;
  nextRetryAt?: string | null;
  restarts?: number | null;
  lastExit?: LlamaExit | null;
  isLoading?: boolean;
  /** Whose server the card shows: a model's id (null while not known). */
  model?: string | null;
  /** That model is the primary one (the default; `/api/llama/*` and `llamaStatus` speak of it). */
  primary?: boolean;
  /** Extra content at the bottom of the card (the controls). */
  children?: ReactNode;
}

interface StatusLook {
  color: ChipProps['color'];
  label: string;
  busy: boolean;
}

const LOOKS: Record<LlamaServiceStatus, StatusLook> = {
  initial: { color: 'default', label: 'Not started yet', busy: false },
  checking: { color: 'info', label: 'Checking llama-server…', busy: true },
  starting: { color: 'info', label: 'Starting llama-server…', busy: true },
  ready: { color: 'success', label: 'Ready', busy: false },
  crashed: { color: 'warning', label: 'llama-server crashed', busy: false },
  stopping: { color: 'default', label: 'Stopping…', busy: false },
  error: { color: 'error', label: 'Error: gave up', busy: false },
};

const UNKNOWN_LOOK: StatusLook = { color: 'default', label: 'Unknown state', busy: false };

function statusLook(status: string): StatusLook {
  return Object.prototype.hasOwnProperty.call(LOOKS, status)
    ? LOOKS[status as LlamaServiceStatus]
    : UNKNOWN_LOOK;
}

/** Seconds until an ISO time, ticking; null when not set or past. */
function useCountdown(iso: string | null | undefined): number | null {
  const target = iso ? Date.parse(iso) : Number.NaN;
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!Number.isFinite(target)) return undefined;
    setNow(Date.now());
    const id = setInterval(() => setNow(Date.now()), 1000);
    return () => clearInterval(id);
  }, [target]);
  if (!Number.isFinite(target)) return null;
  const left = Math.ceil((target - now) / 1000);
  return left > 0 ? left : null;
}

function Stat({ label, children, testId }: { label: string; children: ReactNode; testId?: string }) {
  return (
    <Box sx={{ minWidth: 0 }}>
      <Typography variant="caption" color="text.secondary" component="div">
        {label}
      </Typography>
      <Typography variant="body1" component="div" data-testid={testId} noWrap>
        {children}
      </Typography>
    </Box>
  );
}

function ModelList({ models }: { models: LlamaModel[] }) {
  if (models.length === 0) {
    return (
      <Typography variant="body2" color="text.secondary" data-testid="no-models">
        No models reported.
      </Typography>
    );
  }
  return (
    <List dense disablePadding aria-label="models">
      {models.map((m) => (
        <ListItem
          key={m.id}
          data-testid="model-row"
          disableGutters
          divider
          secondaryAction={
            <Typography variant="body2" sx={{ fontVariantNumeric: 'tabular-nums' }} data-testid="model-size">
              {formatBytes(m.size)}
            </Typography>
          }
          sx={{ pr: 10 }}
        >
          <ListItemText
            primary={
              <Tooltip title={m.id === m.name ? m.id : `${m.name} (${m.id})`}>
                <Box component="span" data-testid="model-name" sx={{ wordBreak: 'break-all' }}>
                  {m.name}
                </Box>
              </Tooltip>
            }
            secondary={
              <>
                {m.type ? (
                  <Box component="span" data-testid="model-type">
                    {m.type}
                  </Box>
                ) : null}
                {m.type && m.modified_at ? ' · ' : null}
                {m.modified_at ? `modified ${formatDateTime(m.modified_at)}` : null}
              </>
            }
          />
        </ListItem>
      ))}
    </List>
  );
}

/** The llama-server status: badge, error and retries, uptime, models. */
export function LlamaStatusCard(props: LlamaStatusCardProps) {
  const {
    status,
    models,
    lastError,
    retries,
    maxRetries,
    uptime,
    startedAt,
    adopted,
    pid,
    nextRetryAt,
    restarts,
    lastExit,
    isLoading = false,
    model = null,
    primary = false,
    children,
  } = props;
  const look = statusLook(status);
  const retryIn = useCountdown(status === 'crashed' || status === 'starting' ? nextRetryAt : null);
  const failed = status === 'crashed' || status === 'error';
  const showProblem = failed || Boolean(lastError);
  const max = typeof maxRetries === 'number' && maxRetries > 0 ? maxRetries : DEFAULT_MAX_RETRIES;
  const showUptime = status === 'ready' || uptime > 0;
  // Older servers send no lines (their lastError carries them): then there is nothing to fold.
  const lastLines = lastExit?.lines ?? [];

  return (
    <Card
      variant="outlined"
      data-testid="status-card"
      data-model={model ?? undefined}
      aria-busy={isLoading || look.busy}
      aria-label={model ? `llama-server of ${model}` : 'llama-server'}
    >
      <CardContent>
        <Stack direction="row" spacing={1.5} sx={{ alignItems: 'center', flexWrap: 'wrap', rowGap: 1 }}>
          <Typography variant="h6" component="h2" sx={{ mr: 'auto' }}>
            llama-server
          </Typography>
          {isLoading ? (
            <Skeleton variant="rounded" width={72} height={24} data-testid="status-loading" />
          ) : (
            <>
              {look.busy ? (
                <CircularProgress size={18} aria-label={look.label} data-testid="status-spinner" />
              ) : null}
              <Chip
                data-testid="status-badge"
                label={status}
                color={look.color}
                variant={status === 'initial' ? 'outlined' : 'filled'}
                title={look.label}
                sx={{ fontWeight: 600, textTransform: 'none' }}
              />
            </>
          )}
        </Stack>

        {model ? (
          <Typography variant="body2" color="text.secondary" component="div" sx={{ mt: 0.5, wordBreak: 'break-all' }}>
            Model{' '}
            <Box component="strong" data-testid="status-model" sx={{ color: 'text.primary' }}>
              {model}
            </Box>
            {primary ? ' · primary' : null}
          </Typography>
        ) : null}

        {!isLoading ? (
          <Typography variant="body2" color="text.secondary" sx={{ mt: 0.5 }} data-testid="status-label">
            {look.label}
          </Typography>
        ) : null}

        {adopted && !isLoading ? (
          <Alert severity="info" variant="outlined" sx={{ mt: 2 }} data-testid="adopted-note">
            Adopted: llamaherd found this llama-server already running and did not start it.
          </Alert>
        ) : null}

        {showProblem && !isLoading ? (
          <Alert
            severity={status === 'error' ? 'error' : failed ? 'warning' : 'info'}
            sx={{ mt: 2, '& .MuiAlert-message': { minWidth: 0 } }}
          >
            <Box data-testid="error-message" sx={{ wordBreak: 'break-word' }}>
              {!failed && lastError ? 'Last error: ' : null}
              {lastError ?? (status === 'error' ? 'llama-server failed.' : 'llama-server exited.')}
            </Box>
            {failed && formatExit(lastExit) ? (
              <Typography variant="body2" component="div" data-testid="last-exit">
                {formatExit(lastExit)}
              </Typography>
            ) : null}
            {failed || retries > 0 ? (
              <Typography variant="body2" component="div" sx={{ mt: 0.5 }}>
                <span data-testid="retry-count">
                  retry {retries}/{max}
                </span>
                {status === 'error' ? ' — gave up; start it again by hand.' : null}
                {retryIn !== null ? ` — next try in ${retryIn}s` : null}
              </Typography>
            ) : null}
            {lastLines.length > 0 ? <LastOutput lines={lastLines} /> : null}
          </Alert>
        ) : null}

        <Box
          sx={{
            mt: 2,
            display: 'grid',
            gap: 2,
            gridTemplateColumns: 'repeat(auto-fill, minmax(96px, 1fr))',
          }}
        >
          <Stat label="Uptime" testId="uptime">
            {isLoading ? <Skeleton width={60} /> : showUptime ? formatUptime(uptime) : '—'}
          </Stat>
          <Stat label="Models" testId="model-count">
            {isLoading ? <Skeleton width={24} /> : models.length}
          </Stat>
          <Stat label="Started">
            <Tooltip title={startedAt ?? ''}>
              <span data-testid="started-at">{formatShortDateTime(startedAt ?? null)}</span>
            </Tooltip>
          </Stat>
          <Stat label="PID" testId="pid">
            {pid ?? '—'}
          </Stat>
          {typeof restarts === 'number' ? (
            <Stat label="Restarts" testId="restarts">
              {restarts}
            </Stat>
          ) : null}
        </Box>

        <Divider sx={{ my: 2 }} />
        <Typography variant="subtitle2" component="h3" gutterBottom>
          Models
        </Typography>
        {isLoading ? <Skeleton variant="rounded" height={40} /> : <ModelList models={models} />}

        {children ? <Box sx={{ mt: 2 }}>{children}</Box> : null}
      </CardContent>
    </Card>
  );
}
