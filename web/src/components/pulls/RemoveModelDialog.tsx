import Alert from '@mui/material/Alert';
import Button from '@mui/material/Button';
import CircularProgress from '@mui/material/CircularProgress';
import Dialog from '@mui/material/Dialog';
import DialogActions from '@mui/material/DialogActions';
import DialogContent from '@mui/material/DialogContent';
import DialogContentText from '@mui/material/DialogContentText';
import DialogTitle from '@mui/material/DialogTitle';
import { useEffect, useState } from 'react';
import type { Removal } from '../../api/client';

export interface RemoveModelDialogProps {
  /** The model to remove; null: the dialog is closed. */
  model: string | null;
  onClose: () => void;
  /** Delete its file; rejects with llamaherd's refusal (409 while it is loaded or busy). */
  onRemove: (id: string) => Promise<Removal>;
  /** Called once llamaherd has removed it (the model leaves the list by the next `llamaModels`). */
  onRemoved: (id: string, removal: Removal) => void;
}

/**
 * Confirms the removal of a pulled model: its file is deleted, which no reload of the page
 * undoes. A refusal stays in the dialog in llamaherd's words (unload it first).
 */
export function RemoveModelDialog({ model, onClose, onRemove, onRemoved }: RemoveModelDialogProps) {
  const [removing, setRemoving] = useState(false);
  const [problem, setProblem] = useState<string | null>(null);
  // The name stays while the dialog fades out (model is already null then).
  const [shown, setShown] = useState(model);

  useEffect(() => {
    if (model !== null) {
      setShown(model);
      setProblem(null);
    }
  }, [model]);

  const remove = async () => {
    if (model === null || removing) return;
    setRemoving(true);
    setProblem(null);
    try {
      onRemoved(model, await onRemove(model));
    } catch (err) {
      setProblem(err instanceof Error ? err.message : String(err));
    } finally {
      setRemoving(false);
    }
  };

  return (
    <Dialog
      open={model !== null}
      onClose={removing ? undefined : onClose}
      aria-labelledby="remove-model-title"
      aria-describedby="remove-model-text"
      data-testid="remove-model-dialog"
      transitionDuration={{ enter: 150, exit: 0 }}
    >
      <DialogTitle id="remove-model-title">Remove {shown}?</DialogTitle>
      <DialogContent>
        <DialogContentText id="remove-model-text">
          Its file is deleted from the models folder and llamaherd no longer serves it. Pull it
          again to bring it back.
        </DialogContentText>
        {problem ? (
          <Alert severity="error" data-testid="remove-model-error" sx={{ mt: 2, '& .MuiAlert-message': { wordBreak: 'break-word' } }}>
            {problem}
          </Alert>
        ) : null}
      </DialogContent>
      <DialogActions>
        <Button onClick={onClose} disabled={removing} autoFocus data-testid="remove-model-cancel">
          Cancel
        </Button>
        <Button
          color="error"
          variant="contained"
          data-testid="remove-model-confirm"
          disabled={removing}
          startIcon={removing ? <CircularProgress size={16} color="inherit" /> : undefined}
          onClick={() => void remove()}
        >
          Remove
        </Button>
      </DialogActions>
    </Dialog>
  );
}
