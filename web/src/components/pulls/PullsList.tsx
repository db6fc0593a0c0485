import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import { useCallback, useState } from 'react';
import type { Pull } from '../../types/pulls';
import { PullRow } from './PullRow';

export interface PullsListProps {
  pulls: Pull[];
  onCancel: (id: string) => Promise<unknown>;
  /** Why the pulls could not be listed (the last try); null when they were. */
  error?: string | null;
}

/**
 * The pulls llamaherd knows of, newest first, several at once. A finished one can be dismissed
 * from this page; a pull still downloading always shows.
 */
export function PullsList({ pulls, onCancel, error = null }: PullsListProps) {
  const [dismissed, setDismissed] = useState<ReadonlySet<string>>(() => new Set());
  const dismiss = useCallback((id: string) => setDismissed((set) => new Set(set).add(id)), []);
  const shown = pulls.filter((p) => !dismissed.has(p.id) || p.state === 'downloading');
  if (shown.length === 0 && error === null) return null;
  return (
    <Box sx={{ mt: 2, px: { xs: 1, sm: 0 } }} data-testid="pulls">
      <Typography variant="subtitle2" component="h3" id="pulls-title">
        Downloads from Hugging Face
      </Typography>
      {error !== null ? (
        <Typography variant="caption" color="warning.main" component="div" role="status" data-testid="pulls-error">
          The downloads could not be listed: {error}
        </Typography>
      ) : null}
      <Box component="ul" aria-labelledby="pulls-title" sx={{ m: 0, p: 0 }}>
        {shown.map((pull) => (
          <PullRow key={pull.id} pull={pull} onCancel={onCancel} onDismiss={dismiss} />
        ))}
      </Box>
    </Box>
  );
}
