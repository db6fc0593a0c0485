import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Collapse from '@mui/material/Collapse';
import { useId, useState } from 'react';

export interface LastOutputProps {
  /** The dead server's telling output lines, oldest first. */
  lines: string[];
}

/**
 * What llama-server printed before it died, folded away under its one-line reason: the
 * reason is what most readers need, the lines are the evidence for whoever digs in.
 * Collapsed by default; the lines wrap rather than widen the card on a phone.
 */
export function LastOutput({ lines }: LastOutputProps) {
  const [open, setOpen] = useState(false);
  const id = useId();
  const count = `${lines.length} ${lines.length === 1 ? 'line' : 'lines'}`;
  return (
    <Box sx={{ mt: 0.5, minWidth: 0 }}>
      <Button
        size="small"
        color="inherit"
        data-testid="last-output-toggle"
        aria-expanded={open}
        aria-controls={id}
        onClick={() => setOpen((was) => !was)}
        sx={{ px: 0.5, ml: -0.5, minWidth: 0, textTransform: 'none' }}
      >
        {open ? '▾' : '▸'} Last output ({count})
      </Button>
      <Collapse in={open} unmountOnExit>
        <Box
          component="pre"
          id={id}
          data-testid="last-output"
          sx={{
            m: 0,
            mt: 0.5,
            p: 1,
            borderRadius: 1,
            bgcolor: 'action.hover',
            fontFamily: 'monospace',
            fontSize: '0.75rem',
            lineHeight: 1.5,
            whiteSpace: 'pre-wrap',
            overflowWrap: 'anywhere',
          }}
        >
          {lines.join('\n')}
        </Box>
      </Collapse>
    </Box>
  );
}
