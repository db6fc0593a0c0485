import Card from '@mui/material/Card';
import CardContent from '@mui/material/CardContent';
import List from '@mui/material/List';
import ListItem from '@mui/material/ListItem';
import ListItemText from '@mui/material/ListItemText';
import Typography from '@mui/material/Typography';
import { exitText, type RestartMarker } from '../../lib/uptime';
import { formatShortDateTime } from '../../utils/format';

export interface RestartsListProps {
  model: string;
  /** Oldest first, as `restartMarkers` gives them. */
  restarts: readonly RestartMarker[];
  nowMs: number;
}

/** A model's restarts of the last 7 days, newest first: when, how it ended, and why. */
export function RestartsList({ model, restarts, nowMs }: RestartsListProps) {
  const newest = [...restarts].reverse();
  return (
    <Card variant="outlined" data-testid="restarts-card" sx={{ height: '100%' }}>
      <CardContent sx={{ '&:last-child': { pb: 1 } }}>
        <Typography variant="subtitle2" component="h3">
          Restarts of {model} (7 days)
        </Typography>
        {newest.length === 0 ? (
          <Typography variant="body2" color="text.secondary" sx={{ mt: 1 }} data-testid="restarts-none">
            No crash in the last 7 days.
          </Typography>
        ) : (
          <List dense disablePadding sx={{ maxHeight: 220, overflowY: 'auto' }}>
            {newest.map((r) => (
              <ListItem key={r.at} disableGutters data-testid="restart-row" data-at={r.at}>
                <ListItemText
                  primary={`${formatShortDateTime(r.at, nowMs)} · ${exitText(r) || 'crashed'}`}
                  secondary={r.reason}
                  slotProps={{ secondary: { sx: { wordBreak: 'break-word' } } }}
                />
              </ListItem>
            ))}
          </List>
        )}
      </CardContent>
    </Card>
  );
}
