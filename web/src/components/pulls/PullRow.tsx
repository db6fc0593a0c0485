import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Chip from '@mui/material/Chip';
import CircularProgress from '@mui/material/CircularProgress';
import LinearProgress from '@mui/material/LinearProgress';
import Stack from '@mui/material/Stack';
import Typography from '@mui/material/Typography';
import { useState } from 'react';
import type { ChipColor } from '../../lib/models';
import { isFinished, pullProgress } from '../../lib/pulls';
import type { Pull } from '../../types/pulls';

export interface PullRowProps {
  pull: Pull;
  /** Cancel the download; rejects with llamaherd's refusal, shown under the row. */
  onCancel: (id: string) => Promise<unknown>;
  /** Hide a finished pull from this page (llamaherd keeps it); absent: no Dismiss button. */
  onDismiss?: (id: string) => void;
}

const STATE_COLOR: Record<string, ChipColor> = {
  downloading: 'info',
  done: 'success',
  failed: 'error',
  cancelled: 'default',
};

/** What a finished pull left: the model it serves, or nothing. */
function outcome(pull: Pull): string | null {
  if (pull.state === 'done') return pull.model ? `served as ${pull.model}` : 'done';
  return null;
}

/**
 * One pull: what it fetches, its state, a progress bar (bytes of total, the percent), Cancel
 * while it downloads, the reason when it failed.
 */
export function PullRow({ pull, onCancel, onDismiss }: PullRowProps) {
  const [cancelling, setCancelling] = useState(false);
  const [cancelError, setCancelError] = useState<string | null>(null);
  const progress = pullProgress(pull);
  const downloading = pull.state === 'downloading';
  const what = pull.source || pull.repo || pull.id;

  const cancel = async () => {
    setCancelling(true);
    setCancelError(null);
    try {
      await onCancel(pull.id);
    } catch (err) {
      setCancelError(err instanceof Error ? err.message : String(err));
    } finally {
      setCancelling(false);
    }
  };

  return (
    <Box
      component="li"
      aria-label={`Pull of ${what}`}
      data-testid="pull-row"
      data-pull-id={pull.id}
      data-state={pull.state}
      sx={{ listStyle: 'none', py: 1, borderTop: 1, borderColor: 'divider' }}
    >
      <Stack direction="row" spacing={1} useFlexGap sx={{ alignItems: 'center', flexWrap: 'wrap' }}>
        <Typography variant="body2" sx={{ fontWeight: 600, wordBreak: 'break-all' }} data-testid="pull-source">
          {what}
        </Typography>
        <Chip size="small" label={pull.state} color={STATE_COLOR[pull.state] ?? 'default'} data-testid="pull-state" />
        {outcome(pull) ? (
          <Typography variant="caption" color="text.secondary" data-testid="pull-model">
            {outcome(pull)}
          </Typography>
        ) : null}
        <Box sx={{ flexGrow: 1 }} />
        <Typography variant="caption" color="text.secondary" sx={{ fontVariantNumeric: 'tabular-nums' }} data-testid="pull-progress-text">
          {progress.text}
        </Typography>
        {downloading ? (
          <Button
            size="small"
            variant="outlined"
            color="warning"
            aria-label={`Cancel pull of ${what}`}
            data-testid="pull-cancel"
            disabled={cancelling}
            startIcon={cancelling ? <CircularProgress size={14} color="inherit" /> : undefined}
            onClick={() => void cancel()}
          >
            Cancel
          </Button>
        ) : null}
        {onDismiss && isFinished(pull) ? (
          <Button size="small" aria-label={`Dismiss pull of ${what}`} data-testid="pull-dismiss" onClick={() => onDismiss(pull.id)}>
            Dismiss
          </Button>
        ) : null}
      </Stack>
      {downloading ? (
        <LinearProgress
          // The size may be unknown until the download's first answer: a moving bar until then.
          variant={progress.percent === null ? 'indeterminate' : 'determinate'}
          value={progress.percent ?? undefined}
          aria-label={`Download of ${what}`}
          aria-valuetext={progress.text}
          data-testid="pull-progress"
          sx={{ mt: 0.75, height: 6, borderRadius: 3 }}
        />
      ) : null}
      {pull.state === 'failed' && pull.error ? (
        <Typography variant="caption" color="error" component="div" sx={{ mt: 0.5, wordBreak: 'break-word' }} data-testid="pull-error">
          {pull.error}
        </Typography>
      ) : null}
      {cancelError ? (
        <Typography variant="caption" color="error" component="div" role="alert" sx={{ mt: 0.5 }} data-testid="pull-cancel-error">
          Cancel failed: {cancelError}
        </Typography>
      ) : null}
    </Box>
  );
}
