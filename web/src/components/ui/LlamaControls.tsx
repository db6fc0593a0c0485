import Alert from '@mui/material/Alert';
import Button from '@mui/material/Button';
import CircularProgress from '@mui/material/CircularProgress';
import Dialog from '@mui/material/Dialog';
import DialogActions from '@mui/material/DialogActions';
import DialogContent from '@mui/material/DialogContent';
import DialogContentText from '@mui/material/DialogContentText';
import DialogTitle from '@mui/material/DialogTitle';
import Snackbar, { type SnackbarCloseReason } from '@mui/material/Snackbar';
import Stack from '@mui/material/Stack';
import { useCallback, useRef, useState, type SyntheticEvent } from 'react';
import { ApiError, controlLlama, type FetchLike } from '../../api/client';
import { availableActions } from '../../lib/status';
import type {
  LlamaControlAction,
  LlamaControlResponse,
  LlamaServiceStatus,
  LlamaStatus,
} from '../../types/llama';

export interface LlamaControlsProps {
  /**
   * The live state, which decides the buttons that make sense (see `availableActions`);
   * null while it is not known yet, which allows none.
   */
  status: LlamaServiceStatus | null;
  /**
   * Called after a successful action with the status it answered with. That status
   * may already be older than the live one, so the page asks the socket again
   * rather than showing it.
   */
  onDone?: (action: LlamaControlAction, status: LlamaStatus | null) => void;
  /** Injected in tests; the global fetch otherwise. */
  fetchImpl?: FetchLike;
  /** Whose server: a model's id (`/api/models/{id}/...`), or null for the primary (`/api/llama/...`). */
  model?: string | null;
}

interface ActionResult {
  severity: 'success' | 'error';
  message: string;
}

const DONE: Record<LlamaControlAction, string> = {
  start: 'Start requested',
  stop: 'Stopped',
  restart: 'Restart requested',
};

const FAILED: Record<LlamaControlAction, string> = {
  start: 'Start failed',
  stop: 'Stop failed',
  restart: 'Restart failed',
};

/**
 * Start and restart answer at once, with a state that is only a moment old (the
 * live status above follows what happens next); stop answers once it is done.
 */
function describeSuccess(action: LlamaControlAction, body: LlamaControlResponse | null, model: string | null): string {
  const state = body?.status?.status;
  if (action === 'stop' && state) return `${DONE.stop} — ${model ?? 'llama-server'} is ${state}`;
  return model ? `${DONE[action]}: ${model}` : DONE[action];
}

function describeError(action: LlamaControlAction, err: unknown): string {
  if (err instanceof ApiError) {
    if (err.status === 409) return `${FAILED[action]}: another action is running — ${err.message}`;
    return err.status > 0
      ? `${FAILED[action]} (HTTP ${err.status}): ${err.message}`
      : `${FAILED[action]}: ${err.message}`;
  }
  return `${FAILED[action]}: ${err instanceof Error ? err.message : String(err)}`;
}

/**
 * Start / stop (confirmed) / restart llama-server through llamaherd's REST API. Only the
 * actions that make sense in the live state are enabled, and none while one is in flight.
 */
export function LlamaControls({ status, onDone, fetchImpl, model = null }: LlamaControlsProps) {
  const [pending, setPending] = useState<LlamaControlAction | null>(null);
  const [confirmOpen, setConfirmOpen] = useState(false);
  const [result, setResult] = useState<ActionResult | null>(null);
  const [resultOpen, setResultOpen] = useState(false);
  const busy = useRef(false);

  const run = useCallback(
    async (action: LlamaControlAction) => {
      if (busy.current) return;
      busy.current = true;
      setPending(action);
      try {
        const body = await controlLlama(action, fetchImpl, model);
        setResult({ severity: 'success', message: describeSuccess(action, body, model) });
        onDone?.(action, body?.status ?? null);
      } catch (err) {
        setResult({ severity: 'error', message: describeError(action, err) });
      } finally {
        busy.current = false;
        setPending(null);
        setResultOpen(true);
      }
    },
    [fetchImpl, onDone, model],
  );

  const closeResult = (_e: SyntheticEvent | Event | null, reason: SnackbarCloseReason) => {
    if (reason === 'clickaway') return;
    setResultOpen(false);
  };

  const allowed = availableActions(status);
  const disabled = (action: LlamaControlAction) => pending !== null || !allowed[action];
  const spinner = (action: LlamaControlAction) =>
    pending === action ? <CircularProgress size={16} color="inherit" /> : undefined;

  return (
    <>
      <Stack direction="row" spacing={1} useFlexGap sx={{ flexWrap: 'wrap' }}>
        <Button
          data-testid="btn-start"
          variant="contained"
          color="success"
          disabled={disabled('start')}
          startIcon={spinner('start')}
          onClick={() => void run('start')}
        >
          Start
        </Button>
        <Button
          data-testid="btn-stop"
          variant="outlined"
          color="error"
          disabled={disabled('stop')}
          startIcon={spinner('stop')}
          onClick={() => setConfirmOpen(true)}
        >
          Stop
        </Button>
        <Button
          data-testid="btn-restart"
          variant="outlined"
          disabled={disabled('restart')}
          startIcon={spinner('restart')}
          onClick={() => void run('restart')}
        >
          Restart
        </Button>
      </Stack>

      <Dialog
        open={confirmOpen}
        onClose={() => setConfirmOpen(false)}
        aria-labelledby="confirm-stop-title"
        aria-describedby="confirm-stop-text"
        // Gone at once on close, so its backdrop never sits over the buttons.
        transitionDuration={{ enter: 150, exit: 0 }}
      >
        <DialogTitle id="confirm-stop-title">{model ? `Stop ${model}?` : 'Stop llama-server?'}</DialogTitle>
        <DialogContent>
          <DialogContentText id="confirm-stop-text">
            {model
              ? 'Its requests in flight finish first; then it refuses requests until it is started again.'
              : 'The models it serves are unavailable until it is started again.'}
          </DialogContentText>
        </DialogContent>
        <DialogActions>
          <Button data-testid="cancel-stop" onClick={() => setConfirmOpen(false)} autoFocus>
            Cancel
          </Button>
          <Button
            data-testid="confirm-stop"
            color="error"
            variant="contained"
            // The state may have moved on while the dialog was open (another page stopped it).
            disabled={disabled('stop')}
            onClick={() => {
              setConfirmOpen(false);
              void run('stop');
            }}
          >
            Stop
          </Button>
        </DialogActions>
      </Dialog>

      <Snackbar
        open={resultOpen && result !== null}
        onClose={closeResult}
        autoHideDuration={result?.severity === 'error' ? 15000 : 8000}
        anchorOrigin={{ vertical: 'bottom', horizontal: 'center' }}
      >
        <Alert
          data-testid="action-result"
          severity={result?.severity ?? 'info'}
          variant="filled"
          onClose={() => setResultOpen(false)}
          sx={{ width: '100%' }}
        >
          {result?.message}
        </Alert>
      </Snackbar>
    </>
  );
}
