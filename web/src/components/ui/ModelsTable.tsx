import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Chip from '@mui/material/Chip';
import CircularProgress from '@mui/material/CircularProgress';
import Link from '@mui/material/Link';
import Skeleton from '@mui/material/Skeleton';
import Snackbar, { type SnackbarCloseReason } from '@mui/material/Snackbar';
import Stack from '@mui/material/Stack';
import type { SxProps, Theme } from '@mui/material/styles';
import Table from '@mui/material/Table';
import TableBody from '@mui/material/TableBody';
import TableCell from '@mui/material/TableCell';
import TableHead from '@mui/material/TableHead';
import TableRow from '@mui/material/TableRow';
import Tooltip from '@mui/material/Tooltip';
import Typography from '@mui/material/Typography';
import { useState, type ReactNode, type SyntheticEvent } from 'react';
import type { Removal } from '../../api/client';
import type { LiveModel } from '../../hooks/useLlamaModels';
import { useNow } from '../../hooks/useNow';
import { formatRate, formatSlots } from '../../lib/metrics';
import { modelActions, modelLook, ttlLeftAt } from '../../lib/models';
import type { ModelAction, ModelActionAck } from '../../types/gateway';
import type { ModelMetrics } from '../../types/metrics';
import { formatAgo, formatBytes, formatUptime } from '../../utils/format';
import { RemoveModelDialog } from '../pulls/RemoveModelDialog';

export interface ModelsTableProps {
  models: LiveModel[];
  isLoading?: boolean;
  /** The action waiting for its acknowledgement, per model id. */
  pending?: Readonly<Record<string, ModelAction>>;
  /** Whether the socket is up: no action can be sent without it. */
  connected?: boolean;
  onLoad: (id: string) => Promise<ModelActionAck>;
  onUnload: (id: string) => Promise<ModelActionAck>;
  /** The live figures per model id (`llamaMetrics`); columns show a dash until they come. */
  metrics?: Readonly<Record<string, ModelMetrics>>;
  /** The model whose status card and logs the page shows (its row is marked). */
  selected?: string | null;
  /** The address that shows a model's status card and logs: each model's name links there. */
  linkTo?: (id: string) => string;
  /** Beside the panel's title (the Add model button). */
  headerAction?: ReactNode;
  /** Under the table (the downloads of models being added). */
  children?: ReactNode;
  /** The ids of the models that may be removed (pulled ones): their rows get a Remove button. */
  removable?: ReadonlySet<string>;
  /** Delete a pulled model, after a confirmation; rejects with llamaherd's refusal. */
  onRemove?: (id: string) => Promise<Removal>;
}

/**
 * Columns shown from a width up. A phone keeps the model, its state and the buttons; the
 * figures the hidden columns held move to a line under the model's name.
 */
type Shown = 'sm' | 'md' | 'lg';
const FROM: Record<Shown, SxProps<Theme>> = {
  sm: { display: { xs: 'none', sm: 'table-cell' } },
  md: { display: { xs: 'none', md: 'table-cell' } },
  lg: { display: { xs: 'none', lg: 'table-cell' } },
};
const ONLY_XS: SxProps<Theme> = { display: { xs: 'block', sm: 'none' } };
/** Read by screen readers, not shown (px units: a bare 1 would mean 100% to `sx`). */
const VISUALLY_HIDDEN: SxProps<Theme> = {
  position: 'absolute',
  width: '1px',
  height: '1px',
  margin: '-1px',
  padding: 0,
  border: 0,
  overflow: 'hidden',
  clip: 'rect(0 0 0 0)',
  whiteSpace: 'nowrap',
};

interface ActionResult {
  severity: 'success' | 'error';
  message: string;
}

const VERB: Record<ModelAction, [string, string]> = {
  load: ['Loading', 'Load'],
  unload: ['Unloading', 'Unload'],
};

function describe(action: ModelAction, id: string, ack: ModelActionAck): ActionResult {
  if (!ack.ok) return { severity: 'error', message: `${VERB[action][1]} ${id} failed: ${ack.error}` };
  if (action === 'unload' && ack.model.inFlight > 0) {
    const n = ack.model.inFlight;
    return { severity: 'success', message: `Unloading ${id} once its ${n} request${n === 1 ? '' : 's'} end` };
  }
  return { severity: 'success', message: `${VERB[action][0]} ${id}…` };
}

function quantAndArch(m: LiveModel): string {
  const parts = [m.quantisation, m.architecture].filter((p): p is string => Boolean(p));
  return parts.length > 0 ? parts.join(' · ') : '—';
}

function Marks({ model }: { model: LiveModel }) {
  if (!model.default && !model.pinned && model.preload === null) return null;
  return (
    <>
      {model.preload !== null ? (
        <Tooltip title={`Loaded when llamaherd starts (place ${model.preload} in the preload order), as far as max_loaded and the memory budget allow`}>
          <Chip size="small" variant="outlined" label={`preload ${model.preload}`} data-testid="gw-preload-mark" />
        </Tooltip>
      ) : null}
      {model.default ? (
        <Tooltip title="Requests that name no model go here">
          <Chip size="small" variant="outlined" color="primary" label="default" data-testid="gw-default-mark" />
        </Tooltip>
      ) : null}
      {model.pinned ? (
        <Tooltip title="Pinned: never unloaded to make room or for idleness">
          <Chip size="small" variant="outlined" label="pinned" data-testid="gw-pinned-mark" />
        </Tooltip>
      ) : null}
    </>
  );
}

function ModelCell({ model, compact, href }: { model: LiveModel; compact: ReactNode; href?: string }) {
  const name = (
    <Typography component="span" variant="body2" sx={{ fontWeight: 600, wordBreak: 'break-all' }} data-testid="gw-model-id">
      {model.id}
    </Typography>
  );
  return (
    <Box sx={{ minWidth: 0 }}>
      <Stack direction="row" spacing={0.5} useFlexGap sx={{ alignItems: 'center', flexWrap: 'wrap' }}>
        <Tooltip title={href ? `Show the status and logs of ${model.id} (${model.path ?? model.id})` : (model.path ?? model.id)}>
          {href ? (
            <Link href={href} underline="hover" color="inherit" data-testid="gw-model-link">
              {name}
            </Link>
          ) : (
            name
          )}
        </Tooltip>
        <Marks model={model} />
      </Stack>
      {model.aliases.length > 0 ? (
        <Typography variant="caption" color="text.secondary" component="div" sx={{ wordBreak: 'break-all' }}>
          also {model.aliases.join(', ')}
        </Typography>
      ) : null}
      <Typography variant="caption" color="text.secondary" component="div" sx={ONLY_XS}>
        {compact}
      </Typography>
      {model.waitingFor ? (
        <Typography variant="caption" color="warning.main" component="div" data-testid="gw-waiting" sx={{ wordBreak: 'break-word' }}>
          waiting: {model.waitingFor}
        </Typography>
      ) : null}
      {model.lastError ? (
        <Tooltip title={model.lastError}>
          <Typography
            variant="caption"
            color="error"
            component="div"
            data-testid="gw-last-error"
            sx={{
              wordBreak: 'break-word',
              display: '-webkit-box',
              WebkitLineClamp: 2,
              WebkitBoxOrient: 'vertical',
              overflow: 'hidden',
            }}
          >
            {model.lastError}
          </Typography>
        </Tooltip>
      ) : null}
    </Box>
  );
}

/** Resident memory, and GPU memory under it when it is known. */
function Memory({ m }: { m: ModelMetrics | undefined }) {
  const rss = m?.memory.rssBytes ?? null;
  const vram = m?.memory.vramBytes ?? null;
  return (
    <>
      {rss === null ? '—' : formatBytes(rss)}
      {vram === null ? null : (
        <Typography variant="caption" color="text.secondary" component="div" data-testid="gw-vram">
          VRAM {formatBytes(vram)}
        </Typography>
      )}
    </>
  );
}

function StateChip({ model }: { model: LiveModel }) {
  const look = modelLook(model);
  return (
    <Stack direction="row" spacing={0.75} sx={{ alignItems: 'center' }}>
      <Tooltip title={look.detail}>
        <Chip
          size="small"
          label={look.label}
          color={look.color}
          variant={look.label === 'unloaded' ? 'outlined' : 'filled'}
          data-testid="gw-state"
          data-state={model.state}
          data-phase={model.phase}
          data-draining={model.draining ? 'true' : 'false'}
          sx={{ fontWeight: 600 }}
        />
      </Tooltip>
      {look.busy ? <CircularProgress size={14} aria-label={look.detail} /> : null}
    </Stack>
  );
}

/**
 * Every model the gateway serves: its state, load, queue, idle time, TTL and file, with Load
 * and Unload buttons enabled as its phase allows (see `modelActions`) and never while an
 * action on it waits for its answer; a pulled model also has Remove (confirmed first).
 */
export function ModelsTable({
  models,
  isLoading = false,
  pending = {},
  connected = true,
  onLoad,
  onUnload,
  metrics = NO_METRICS,
  selected = null,
  linkTo,
  headerAction,
  children,
  removable = NOTHING_REMOVABLE,
  onRemove,
}: ModelsTableProps) {
  const ticking = models.some((m) => m.lastUsedLocal !== null || m.ttlLeft !== null);
  const clock = useNow(ticking);
  const latest = models.reduce((t, m) => Math.max(t, m.receivedAt), 0);
  const now = Math.max(clock, latest);
  const [result, setResult] = useState<ActionResult | null>(null);
  const [resultOpen, setResultOpen] = useState(false);
  // The model whose removal waits for a confirmation.
  const [toRemove, setToRemove] = useState<string | null>(null);

  const act = async (action: ModelAction, id: string) => {
    const ack = await (action === 'load' ? onLoad(id) : onUnload(id));
    setResult(describe(action, id, ack));
    setResultOpen(true);
  };
  const removed = (id: string, removal: Removal) => {
    setToRemove(null);
    setResult(
      removal.reloadError
        ? { severity: 'error', message: `Removed the files of ${id}, but the reload that follows failed: ${removal.reloadError}` }
        : { severity: 'success', message: `Removed ${id}` },
    );
    setResultOpen(true);
  };
  const closeResult = (_e: SyntheticEvent | Event | null, reason: SnackbarCloseReason) => {
    if (reason !== 'clickaway') setResultOpen(false);
  };

  const loaded = models.filter((m) => m.loaded).length;

  return (
    <Card variant="outlined" data-testid="models-card">
      <CardContent sx={{ px: { xs: 1, sm: 2 } }}>
        <Stack direction="row" spacing={1} sx={{ alignItems: 'baseline', mb: 1, px: { xs: 1, sm: 0 } }}>
          <Typography variant="h6" component="h2">
            Models
          </Typography>
          <Typography variant="body2" color="text.secondary" data-testid="gw-summary">
            {isLoading ? '' : `${models.length} served · ${loaded} loaded`}
          </Typography>
          {headerAction ? <Box sx={{ ml: 'auto !important', alignSelf: 'center' }}>{headerAction}</Box> : null}
        </Stack>
        {isLoading ? (
          <Skeleton variant="rounded" height={72} data-testid="models-loading" />
        ) : models.length === 0 ? (
          <Typography variant="body2" color="text.secondary" data-testid="gw-no-models">
            No models configured.
          </Typography>
        ) : (
          <Table
            size="small"
            aria-label="models"
            data-testid="models-table"
            sx={{ tableLayout: 'auto', '& td, & th': { px: { xs: 0.75, sm: 1.5 } } }}
          >
            <TableHead>
              <TableRow>
                <TableCell>Model</TableCell>
                <TableCell>State</TableCell>
                <TableCell align="right" sx={FROM.sm}>
                  In flight
                </TableCell>
                <TableCell align="right" sx={FROM.sm}>
                  Queued
                </TableCell>
                <TableCell align="right" sx={FROM.sm}>
                  <Tooltip title="Mean generation speed of the last minute's requests">
                    <span>Speed</span>
                  </Tooltip>
                </TableCell>
                <TableCell align="right" sx={FROM.lg}>
                  <Tooltip title="Busy slots of llama-server / its slots">
                    <span>Slots</span>
                  </Tooltip>
                </TableCell>
                <TableCell align="right" sx={FROM.md}>
                  <Tooltip title="Resident memory of llama-server (and GPU memory, when known)">
                    <span>Memory</span>
                  </Tooltip>
                </TableCell>
                <TableCell sx={FROM.md}>Last used</TableCell>
                <TableCell sx={FROM.md}>TTL left</TableCell>
                <TableCell align="right" sx={FROM.lg}>
                  Size
                </TableCell>
                <TableCell sx={FROM.lg}>Quant · arch</TableCell>
                <TableCell align="right">
                  <Box component="span" sx={VISUALLY_HIDDEN}>
                    Actions
                  </Box>
                </TableCell>
              </TableRow>
            </TableHead>
            <TableBody>
              {models.map((m) => {
                const allowed = modelActions(m);
                const waiting = pending[m.id];
                const lastUsed = formatAgo(m.lastUsedLocal, now);
                const ttl = ttlLeftAt(m.ttlLeft, m.receivedAt, now);
                const ttlText = ttl !== null ? formatUptime(Math.ceil(ttl)) : '—';
                const spinner = (action: ModelAction) =>
                  waiting === action ? <CircularProgress size={14} color="inherit" /> : undefined;
                const live = metrics[m.id];
                const rate = formatRate(live?.tokensPerSecond);
                const compact = `${m.inFlight} in flight · ${m.queued} queued · used ${lastUsed}${rate === '—' ? '' : ` · ${rate}`}`;
                return (
                  <TableRow
                    key={m.id}
                    data-testid="gw-model-row"
                    data-model-id={m.id}
                    hover
                    selected={m.id === selected}
                    aria-selected={linkTo ? m.id === selected : undefined}
                  >
                    <TableCell sx={{ maxWidth: { xs: 160, sm: 280, md: 360 } }}>
                      <ModelCell model={m} compact={compact} href={linkTo?.(m.id)} />
                    </TableCell>
                    <TableCell>
                      <StateChip model={m} />
                    </TableCell>
                    <TableCell align="right" sx={{ ...FROM.sm, fontVariantNumeric: 'tabular-nums' }} data-testid="gw-in-flight">
                      {m.inFlight}/{m.maxConcurrency}
                    </TableCell>
                    <TableCell align="right" sx={{ ...FROM.sm, fontVariantNumeric: 'tabular-nums' }} data-testid="gw-queued">
                      {m.queued}
                    </TableCell>
                    <TableCell align="right" sx={{ ...FROM.sm, whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }} data-testid="gw-tps">
                      {rate}
                    </TableCell>
                    <TableCell align="right" sx={{ ...FROM.lg, fontVariantNumeric: 'tabular-nums' }} data-testid="gw-slots">
                      {formatSlots(live?.slotsBusy, live?.slotsTotal)}
                    </TableCell>
                    <TableCell align="right" sx={{ ...FROM.md, whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }} data-testid="gw-memory">
                      <Memory m={live} />
                    </TableCell>
                    <TableCell sx={{ ...FROM.md, whiteSpace: 'nowrap' }} data-testid="gw-last-used">
                      {lastUsed}
                    </TableCell>
                    <TableCell
                      sx={{ ...FROM.md, whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }}
                      data-testid="gw-ttl-left"
                      title={m.ttlSeconds !== null ? `unloads after ${formatUptime(m.ttlSeconds)} idle` : 'no TTL: stays loaded'}
                    >
                      {ttlText}
                    </TableCell>
                    <TableCell align="right" sx={{ ...FROM.lg, whiteSpace: 'nowrap' }} data-testid="gw-size">
                      {formatBytes(m.size)}
                    </TableCell>
                    <TableCell sx={{ ...FROM.lg, whiteSpace: 'nowrap' }} data-testid="gw-quant">
                      {quantAndArch(m)}
                    </TableCell>
                    <TableCell align="right">
                      <Stack direction={{ xs: 'column', sm: 'row' }} spacing={0.5} sx={{ justifyContent: 'flex-end' }}>
                        <Button
                          size="small"
                          variant="outlined"
                          data-testid="btn-load"
                          aria-label={`Load ${m.id}`}
                          disabled={!connected || waiting !== undefined || !allowed.load}
                          startIcon={spinner('load')}
                          onClick={() => void act('load', m.id)}
                        >
                          Load
                        </Button>
                        <Button
                          size="small"
                          variant="outlined"
                          color="warning"
                          data-testid="btn-unload"
                          aria-label={`Unload ${m.id}`}
                          disabled={!connected || waiting !== undefined || !allowed.unload}
                          startIcon={spinner('unload')}
                          onClick={() => void act('unload', m.id)}
                        >
                          Unload
                        </Button>
                        {onRemove && removable.has(m.id) ? (
                          <Button
                            size="small"
                            variant="outlined"
                            color="error"
                            data-testid="btn-remove"
                            aria-label={`Remove ${m.id}`}
                            disabled={waiting !== undefined}
                            onClick={() => setToRemove(m.id)}
                          >
                            Remove
                          </Button>
                        ) : null}
                      </Stack>
                    </TableCell>
                  </TableRow>
                );
              })}
            </TableBody>
          </Table>
        )}
        {children}
      </CardContent>
      {onRemove ? (
        <RemoveModelDialog model={toRemove} onClose={() => setToRemove(null)} onRemove={onRemove} onRemoved={removed} />
      ) : null}
      <Snackbar
        open={resultOpen}
        autoHideDuration={result?.severity === 'error' ? 10000 : 4000}
        onClose={closeResult}
        anchorOrigin={{ vertical: 'bottom', horizontal: 'left' }}
      >
        <Alert
          severity={result?.severity ?? 'success'}
          variant="filled"
          onClose={() => setResultOpen(false)}
          data-testid="model-action-result"
          sx={{ width: '100%' }}
        >
          {result?.message ?? ''}
        </Alert>
      </Snackbar>
    </Card>
  );
}

const NO_METRICS: Readonly<Record<string, ModelMetrics>> = {};
const NOTHING_REMOVABLE: ReadonlySet<string> = new Set();
