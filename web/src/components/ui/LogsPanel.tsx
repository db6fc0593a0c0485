import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import Stack from '@mui/material/Stack';
import Typography from '@mui/material/Typography';
import { useCallback, useLayoutEffect, useRef, useState } from 'react';

export interface LogsPanelProps {
  lines: string[];
  loading?: boolean;
  error?: string | null;
  onClear?: () => void;
  /** Whose llama-server wrote them (shown beside the title), if known. */
  model?: string | null;
  /** CSS height of the scrolling area. */
  height?: number | string | Record<string, number | string>;
}

/** Pixels from the bottom that still count as "at the bottom". */
const STICK_SLACK = 32;

/** llama-server's output, monospace, following new lines while scrolled to the bottom. */
export function LogsPanel({ lines, loading = false, error = null, onClear, model = null, height }: LogsPanelProps) {
  const scroller = useRef<HTMLDivElement | null>(null);
  const [follow, setFollow] = useState(true);
  const followRef = useRef(true);

  const setFollowing = useCallback((value: boolean) => {
    followRef.current = value;
    setFollow(value);
  }, []);

  const onScroll = useCallback(() => {
    const el = scroller.current;
    if (!el) return;
    const atBottom = el.scrollHeight - el.scrollTop - el.clientHeight <= STICK_SLACK;
    if (atBottom !== followRef.current) setFollowing(atBottom);
  }, [setFollowing]);

  useLayoutEffect(() => {
    const el = scroller.current;
    if (el && followRef.current) el.scrollTop = el.scrollHeight;
  }, [lines]);

  const jumpToEnd = () => {
    const el = scroller.current;
    if (el) el.scrollTop = el.scrollHeight;
    setFollowing(true);
  };

  return (
    <Card variant="outlined" sx={{ display: 'flex', flexDirection: 'column', minWidth: 0 }}>
      <CardContent sx={{ pb: 1 }}>
        <Stack direction="row" spacing={1} sx={{ alignItems: 'center', flexWrap: 'wrap', rowGap: 1 }}>
          <Typography variant="h6" component="h2" sx={{ mr: 'auto', minWidth: 0, wordBreak: 'break-all' }}>
            Logs
            {model ? (
              <Typography component="span" variant="body1" color="text.secondary" data-testid="logs-model">
                {' '}
                · {model}
              </Typography>
            ) : null}
          </Typography>
          <Typography variant="caption" color="text.secondary" data-testid="logs-count">
            {lines.length} {lines.length === 1 ? 'line' : 'lines'}
          </Typography>
          {!follow ? (
            <Button size="small" onClick={jumpToEnd} data-testid="logs-follow">
              Follow ↓
            </Button>
          ) : null}
          {onClear ? (
            <Button size="small" color="inherit" onClick={onClear} disabled={lines.length === 0}>
              Clear
            </Button>
          ) : null}
        </Stack>
        {error ? (
          <Alert severity="warning" sx={{ mt: 1 }} data-testid="logs-error">
            Could not load the log history: {error}
          </Alert>
        ) : null}
      </CardContent>
      <Box
        ref={scroller}
        onScroll={onScroll}
        data-testid="logs-panel"
        role="log"
        aria-live="off"
        aria-label={model ? `llama-server output of ${model}` : 'llama-server output'}
        tabIndex={0}
        sx={(theme) => ({
          height: height ?? { xs: 320, md: 560 },
          overflow: 'auto',
          mx: 2,
          mb: 2,
          p: 1.5,
          borderRadius: 1,
          bgcolor: theme.palette.mode === 'dark' ? 'grey.900' : 'grey.100',
          color: 'text.primary',
          fontFamily:
            'ui-monospace, SFMono-Regular, Menlo, Consolas, "Liberation Mono", "DejaVu Sans Mono", monospace',
          fontSize: 12.5,
          lineHeight: 1.45,
          whiteSpace: 'pre-wrap',
          wordBreak: 'break-all',
        })}
      >
        {lines.length === 0 ? (
          <Box component="span" sx={{ color: 'text.secondary' }}>
            {loading ? 'Loading output…' : 'No output yet.'}
          </Box>
        ) : (
          lines.join('\n')
        )}
      </Box>
    </Card>
  );
}
