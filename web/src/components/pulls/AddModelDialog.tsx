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
import { readSource } from '../../lib/pulls';

export interface AddModelDialogProps {
  open: boolean;
  onClose: () => void;
  /** Start pulling `source`; rejects with llamaherd's refusal, whose message the dialog shows. */
  onPull: (source: string) => Promise<unknown>;
}

const NO_AUTOFILL = { autoComplete: 'off', spellCheck: false, autoCapitalize: 'off' } as const;

/**
 * Asks which model to pull from Hugging Face: a repository and, optionally, a quantisation or a
 * file. It closes once llamaherd has taken the pull (its progress is then a row of the models
 * panel); a refusal stays in the dialog, in llamaherd's words (the files a tag matches, a
 * gated repository, no room on the disk), so the user can correct the form and try again.
 */
export function AddModelDialog({ open, onClose, onPull }: AddModelDialogProps) {
  const [repository, setRepository] = useState('');
  const [choice, setChoice] = useState('');
  const [problem, setProblem] = useState<string | null>(null);
  const [sending, setSending] = useState(false);

  // Each time it opens, it starts empty: the last pull's fields are done with.
  useEffect(() => {
    if (open) {
      setRepository('');
      setChoice('');
      setProblem(null);
    }
  }, [open]);

  const submit = async (e: FormEvent) => {
    e.preventDefault();
    if (sending) return;
    const reading = readSource(repository, choice);
    if (!reading.ok) {
      setProblem(reading.problem);
      return;
    }
    setSending(true);
    setProblem(null);
    try {
      await onPull(reading.source);
      onClose();
    } catch (err) {
      setProblem(err instanceof Error ? err.message : String(err));
    } finally {
      setSending(false);
    }
  };

  return (
    <Dialog
      open={open}
      onClose={sending ? undefined : onClose}
      aria-labelledby="add-model-title"
      aria-describedby="add-model-text"
      data-testid="add-model-dialog"
      fullWidth
      maxWidth="sm"
    >
      <Box component="form" onSubmit={(e) => void submit(e)} noValidate>
        <DialogTitle id="add-model-title">Add a model from Hugging Face</DialogTitle>
        <DialogContent>
          <DialogContentText id="add-model-text" sx={{ mb: 2 }}>
            llamaherd downloads the GGUF file into its models folder and serves it once it is
            there. Name the quantisation (such as Q4_K_M) or the file when the repository holds
            several.
          </DialogContentText>
          {problem ? (
            <Alert
              severity="error"
              data-testid="add-model-error"
              // Long lists of file names (a tag that matches several) wrap instead of overflowing.
              sx={{ mb: 2, '& .MuiAlert-message': { wordBreak: 'break-word', whiteSpace: 'pre-wrap' } }}
            >
              {problem}
            </Alert>
          ) : null}
          <TextField
            autoFocus
            fullWidth
            required
            margin="dense"
            label="Repository"
            placeholder="owner/model-GGUF"
            helperText="owner/name, or its address on huggingface.co"
            value={repository}
            onChange={(e) => setRepository(e.target.value)}
            disabled={sending}
            slotProps={{ htmlInput: { 'data-testid': 'add-model-repo', ...NO_AUTOFILL } }}
          />
          <TextField
            fullWidth
            margin="dense"
            label="Quantisation or file"
            placeholder="Q4_K_M"
            helperText="Optional: a quantisation tag, or a file name ending in .gguf"
            value={choice}
            onChange={(e) => setChoice(e.target.value)}
            disabled={sending}
            slotProps={{ htmlInput: { 'data-testid': 'add-model-choice', ...NO_AUTOFILL } }}
          />
        </DialogContent>
        <DialogActions>
          <Button onClick={onClose} disabled={sending} data-testid="add-model-cancel">
            Cancel
          </Button>
          <Button
            type="submit"
            variant="contained"
            data-testid="add-model-submit"
            disabled={sending || repository.trim() === ''}
            startIcon={sending ? <CircularProgress size={16} color="inherit" /> : undefined}
          >
            Pull
          </Button>
        </DialogActions>
      </Box>
    </Dialog>
  );
}
