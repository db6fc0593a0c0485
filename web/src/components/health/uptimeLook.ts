import type { SxProps, Theme } from '@mui/material/styles';
import type { SegmentKind } from '../../lib/uptime';

/** How each kind of segment looks, and what the legend says of it. */
export interface KindLook {
  label: string;
  sx: SxProps<Theme>;
  /** Counts in the availability's denominator. */
  wanted: boolean;
}

export const KIND_LOOK: Record<SegmentKind, KindLook> = {
  ready: { label: 'ready', sx: { bgcolor: 'success.main' }, wanted: true },
  starting: { label: 'starting', sx: { bgcolor: 'info.main' }, wanted: true },
  crashed: { label: 'crashed', sx: { bgcolor: 'warning.main' }, wanted: true },
  error: { label: 'error', sx: { bgcolor: 'error.main' }, wanted: true },
  stopped: {
    label: 'stopped',
    sx: { bgcolor: (theme: Theme) => (theme.palette.mode === 'dark' ? theme.palette.grey[700] : theme.palette.grey[300]) },
    wanted: false,
  },
  unknown: {
    label: 'no record',
    sx: {
      bgcolor: 'transparent',
      backgroundImage: (theme: Theme) =>
        `repeating-linear-gradient(45deg, ${theme.palette.divider} 0 3px, transparent 3px 6px)`,
    },
    wanted: false,
  },
};

export const KIND_ORDER: readonly SegmentKind[] = ['ready', 'starting', 'crashed', 'error', 'stopped', 'unknown'];
