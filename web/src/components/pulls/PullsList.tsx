import Box from '@mui/material/Box';
import Typography from '@mui/material/Typography';
import { useCallback, useState } from 'react';
import type { Pull } from '../../types/pulls';
import { PullRow } from './PullRow';

export interface PullsListProps {
  pulls: Pull[];
  onCancel: (id: string) => Promise<unknown>;
}

/**
 * The pulls llamaherd knows of, newest first, several at once. A finished one can be dismissed
 * from this page; a pull still downloading always shows.
 */
export function PullsList({ pulls, onCancel }: PullsListProps) {
  const [dismissed, setDismissed] = useState<ReadonlySet<string>>(() => new Set());
  const dismiss = useCallback((id: string) => setDismissed((set) => new Set(set).add(id)), []);
  const shown = pulls.filter((p) => !dismissed.has(p.id) || p.state === 'downloading');
  if (shown.length === 0) return null;
  return (
    <Box sx={{ mt: 2, px: { xs: 1, sm: 0 } }} data-testid="pulls">
      <Typography variant="subtitle2" component="h3" id="pulls-title">
        Downloads from Hugging Face
      </Typography>
      <Box component="ul" aria-labelledby="pulls-title" sx={{ m: 0, p: 0 }}>
        {shown.map((pull) => (
          <PullRow key={pull.id} pull={pull} onCancel={onCancel} onDismiss={dismiss} />
        ))}
      </Box>
    </Box>
  );
}
