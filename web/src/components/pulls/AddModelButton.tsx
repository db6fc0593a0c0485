import Button from '@mui/material/Button';
import { useState } from 'react';
import { AddModelDialog } from './AddModelDialog';

export interface AddModelButtonProps {
  /** Start pulling a source; rejects with llamaherd's refusal. */
  onPull: (source: string) => Promise<unknown>;
}

/** The models panel's "Add model": opens the dialog that pulls one from Hugging Face. */
export function AddModelButton({ onPull }: AddModelButtonProps) {
  const [open, setOpen] = useState(false);
  return (
    <>
      <Button size="small" variant="contained" data-testid="btn-add-model" onClick={() => setOpen(true)}>
        Add model
      </Button>
      <AddModelDialog open={open} onClose={() => setOpen(false)} onPull={onPull} />
    </>
  );
}
