import Box from '@mui/material/Box';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Chip from '@mui/material/Chip';
import Stack from '@mui/material/Stack';
import type { SxProps, Theme } from '@mui/material/styles';
import Table from '@mui/material/Table';
import TableBody from '@mui/material/TableBody';
import TableCell from '@mui/material/TableCell';
import TableHead from '@mui/material/TableHead';
import TablePagination from '@mui/material/TablePagination';
import TableRow from '@mui/material/TableRow';
import TextField from '@mui/material/TextField';
import Tooltip from '@mui/material/Tooltip';
import Typography from '@mui/material/Typography';
import { useMemo, useState } from 'react';
import { filterRequests, STATUS_CLASSES, statusClass, type RequestFilter } from '../../lib/history';
import { formatRate } from '../../lib/metrics';
import type { HistoryRequest } from '../../types/history';
import { formatShortDateTime } from '../../utils/format';

export interface RequestsTableProps {
  requests: readonly HistoryRequest[];
  /** The models to filter by (every configured one). */
  modelIds: readonly string[];
  /** ms, for the dates. */
  nowMs: number;
  /** The page size at first (tests). */
  rowsPerPage?: number;
}

const FROM_SM: SxProps<Theme> = { display: { xs: 'none', sm: 'table-cell' } };
const FROM_MD: SxProps<Theme> = { display: { xs: 'none', md: 'table-cell' } };
const CLASS_COLOR: Record<string, 'success' | 'warning' | 'error' | 'default'> = {
  '2xx': 'success',
  '4xx': 'warning',
  '5xx': 'error',
  none: 'default',
};

const ms = (v: number | null) => (v === null ? '—' : v >= 10_000 ? `${(v / 1000).toFixed(1)} s` : `${Math.round(v)} ms`);
const tokens = (r: HistoryRequest) =>
  r.promptTokens === null && r.completionTokens === null ? '—' : `${r.promptTokens ?? '?'} → ${r.completionTokens ?? '?'}`;

/** The last requests the gateway served, newest first, filtered by model and status class. */
export function RequestsTable({ requests, modelIds, nowMs, rowsPerPage: initialRows = 25 }: RequestsTableProps) {
  const [filter, setFilter] = useState<RequestFilter>({ model: null, statusClass: null });
  const [page, setPage] = useState(0);
  const [rowsPerPage, setRowsPerPage] = useState(initialRows);
  const shown = useMemo(() => filterRequests(requests, filter), [requests, filter]);
  const lastPage = Math.max(0, Math.ceil(shown.length / rowsPerPage) - 1);
  const current = Math.min(page, lastPage);
  const rows = shown.slice(current * rowsPerPage, (current + 1) * rowsPerPage);
  const models = useMemo(() => [...new Set([...modelIds, ...requests.map((r) => r.model)])], [modelIds, requests]);

  const change = (next: Partial<RequestFilter>) => {
    setFilter((f) => ({ ...f, ...next }));
    setPage(0);
  };

  return (
    <Card variant="outlined" data-testid="requests-card">
      <CardContent sx={{ px: { xs: 1, sm: 2 } }}>
        <Stack
          direction={{ xs: 'column', sm: 'row' }}
          spacing={1}
          useFlexGap
          sx={{ alignItems: { xs: 'stretch', sm: 'center' }, mb: 1, px: { xs: 1, sm: 0 } }}
        >
          <Typography variant="h6" component="h2" sx={{ flexGrow: 1 }}>
            Recent requests
          </Typography>
          <TextField
            select
            size="small"
            label="Model"
            value={filter.model ?? ''}
            onChange={(e) => change({ model: e.target.value || null })}
            slotProps={{ select: { native: true }, htmlInput: { 'data-testid': 'requests-filter-model' }, inputLabel: { shrink: true } }}
            sx={{ minWidth: 140 }}
          >
            <option value="">all models</option>
            {models.map((id) => (
              <option key={id} value={id}>
                {id}
              </option>
            ))}
          </TextField>
          <TextField
            select
            size="small"
            label="Status"
            value={filter.statusClass ?? ''}
            onChange={(e) => change({ statusClass: e.target.value || null })}
            slotProps={{ select: { native: true }, htmlInput: { 'data-testid': 'requests-filter-status' }, inputLabel: { shrink: true } }}
            sx={{ minWidth: 120 }}
          >
            <option value="">any status</option>
            {STATUS_CLASSES.map((c) => (
              <option key={c} value={c}>
                {c === 'none' ? 'no answer' : c}
              </option>
            ))}
          </TextField>
        </Stack>
        {shown.length === 0 ? (
          <Typography variant="body2" color="text.secondary" sx={{ px: { xs: 1, sm: 0 } }} data-testid="requests-empty">
            {requests.length === 0 ? 'No requests recorded yet.' : 'No request matches these filters.'}
          </Typography>
        ) : (
          <>
            <Table size="small" aria-label="recent requests" data-testid="requests-table" sx={{ '& td, & th': { px: { xs: 0.75, sm: 1.5 } } }}>
              <TableHead>
                <TableRow>
                  <TableCell>Time</TableCell>
                  <TableCell>Model</TableCell>
                  <TableCell>Status</TableCell>
                  <TableCell align="right">Latency</TableCell>
                  <TableCell align="right" sx={FROM_MD}>
                    Queued
                  </TableCell>
                  <TableCell align="right" sx={FROM_MD}>
                    First token
                  </TableCell>
                  <TableCell align="right" sx={FROM_SM}>
                    Tokens
                  </TableCell>
                  <TableCell align="right" sx={FROM_SM}>
                    Speed
                  </TableCell>
                  <TableCell sx={FROM_MD}>Endpoint · error</TableCell>
                </TableRow>
              </TableHead>
              <TableBody>
                {rows.map((r, i) => {
                  const cls = statusClass(r.status);
                  return (
                    <TableRow key={`${r.at}-${r.model}-${i}`} data-testid="request-row" data-model={r.model} data-status-class={cls} hover>
                      <TableCell sx={{ whiteSpace: 'nowrap' }}>{formatShortDateTime(r.at, nowMs)}</TableCell>
                      <TableCell sx={{ wordBreak: 'break-all' }} data-testid="request-model">
                        {r.model}
                      </TableCell>
                      <TableCell>
                        <Chip
                          size="small"
                          variant="outlined"
                          color={CLASS_COLOR[cls] ?? 'default'}
                          label={r.status ?? 'none'}
                          data-testid="request-status"
                        />
                      </TableCell>
                      <TableCell align="right" sx={{ whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }}>
                        {ms(r.latencyMs)}
                      </TableCell>
                      <TableCell align="right" sx={{ ...FROM_MD, whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }}>
                        {ms(r.queueWaitMs)}
                      </TableCell>
                      <TableCell align="right" sx={{ ...FROM_MD, whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }}>
                        {ms(r.ttftMs)}
                      </TableCell>
                      <TableCell align="right" sx={{ ...FROM_SM, whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }}>
                        {tokens(r)}
                      </TableCell>
                      <TableCell align="right" sx={{ ...FROM_SM, whiteSpace: 'nowrap', fontVariantNumeric: 'tabular-nums' }}>
                        {formatRate(r.tokensPerSecond)}
                      </TableCell>
                      <TableCell sx={{ ...FROM_MD, maxWidth: 280 }}>
                        <Box component="span" sx={{ fontFamily: 'monospace', fontSize: '0.8em' }}>
                          {r.endpoint}
                        </Box>
                        {r.error ? (
                          <Tooltip title={r.error}>
                            <Typography variant="caption" color="error" component="div" noWrap>
                              {r.error}
                            </Typography>
                          </Tooltip>
                        ) : null}
                      </TableCell>
                    </TableRow>
                  );
                })}
              </TableBody>
            </Table>
            <TablePagination
              component="div"
              count={shown.length}
              page={current}
              onPageChange={(_e, p) => setPage(p)}
              rowsPerPage={rowsPerPage}
              rowsPerPageOptions={[10, 25, 100]}
              onRowsPerPageChange={(e) => {
                setRowsPerPage(Number(e.target.value));
                setPage(0);
              }}
              data-testid="requests-pagination"
              sx={{
                // A phone keeps the count and the arrows; the page size needs the room.
                '& .MuiTablePagination-selectLabel, & .MuiTablePagination-input': { display: { xs: 'none', sm: 'inline-flex' } },
                '& .MuiTablePagination-toolbar': { pl: { xs: 1, sm: 2 } },
              }}
            />
          </>
        )}
      </CardContent>
    </Card>
  );
}
