import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import CircularProgress from '@mui/material/CircularProgress';
import Dialog from '@mui/material/Dialog';
import DialogActions from '@mui/material/DialogActions';
import DialogContent from '@mui/material/DialogContent';
import DialogContentText from '@mui/material/DialogContentText';
import DialogTitle from '@mui/material/DialogTitle';
import TextField from '@mui/material/TextField';
import { useEffect, useState, type FormEvent } from 'react';
import type { AuthProblem } from '../../lib/apiKey';

export interface ApiKeyDialogProps {
  open: boolean;
  /** llamaherd's standing refusal; its sentence is shown when it refused a key that was sent. */
  problem: AuthProblem | null;
  /** Try a key: resolves when llamaherd accepts it, rejects with its reason otherwise. */
  check: (key: string) => Promise<void>;
  /** A key llamaherd accepted, to keep. */
  onAccepted: (key: string) => void;
}

/**
 * Asks for an API key while llamaherd refuses the page's calls. A key is tried before it is
 * kept, and llamaherd's own sentence says why one is refused (unknown, or without the admin
 * scope the dashboard needs). It has no way to close it (no `onClose`: Escape and the backdrop
 * do nothing): without a key nothing on the page works.
 */
export function ApiKeyDialog({ open, problem, check, onAccepted }: ApiKeyDialogProps) {
  const [value, setValue] = useState('');
  const [checking, setChecking] = useState(false);
  const [error, setError] = useState<string | null>(null);

  // Each time it opens, it starts empty: a key typed before is not left lying in the field.
  useEffect(() => {
    if (open) {
      setValue('');
      setError(null);
    }
  }, [open]);

  const key = value.trim();
  const shown = error ?? (problem && problem.code !== 'missing_api_key' ? problem.message : null);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (key === '' || checking) return;
    setChecking(true);
    setError(null);
    try {
      await check(key);
      setValue('');
      onAccepted(key);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    } finally {
      setChecking(false);
    }
  };

  return (
    <Dialog
      open={open}
      aria-labelledby="api-key-title"
      aria-describedby="api-key-text"
      data-testid="api-key-dialog"
      fullWidth
      maxWidth="xs"
    >
      <Box component="form" onSubmit={(e) => void submit(e)} noValidate>
        <DialogTitle id="api-key-title">API key needed</DialogTitle>
        <DialogContent>
          <DialogContentText id="api-key-text" sx={{ mb: 2 }}>
            This llamaherd asks for an API key. The dashboard needs one with the admin scope; it is
            kept for this browser tab only.
          </DialogContentText>
          {shown ? (
            <Alert severity="error" data-testid="api-key-error" sx={{ mb: 2, '& .MuiAlert-message': { wordBreak: 'break-word' } }}>
              {shown}
            </Alert>
          ) : null}
          <TextField
            autoFocus
            fullWidth
            type="password"
            label="API key"
            value={value}
            onChange={(e) => setValue(e.target.value)}
            disabled={checking}
            slotProps={{ htmlInput: { 'data-testid': 'api-key-input', autoComplete: 'off', spellCheck: false } }}
          />
        </DialogContent>
        <DialogActions>
          <Button
            type="submit"
            variant="contained"
            data-testid="api-key-submit"
            disabled={key === '' || checking}
            startIcon={checking ? <CircularProgress size={16} color="inherit" /> : undefined}
          >
            Use key
          </Button>
        </DialogActions>
      </Box>
    </Dialog>
  );
}
