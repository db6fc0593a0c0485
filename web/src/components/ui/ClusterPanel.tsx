import { Alert, Box, Card, CardContent, Chip, Stack, Tooltip, Typography } from '@mui/material';
import type { ConfigInfo, PeerStatus } from '../../types/gateway';

export interface ClusterPanelProps {
  /** When the config was loaded and how its last reload went (null: not known). */
  config: ConfigInfo | null;
  /** A front's peers (empty on a llamaherd that has none). */
  peers: PeerStatus[];
}

function clock(ms: number): string {
  return new Date(ms).toLocaleTimeString();
}

/** The config's last load and reload, and, on a front, every peer with its reachability. */
export function ClusterPanel({ config, peers }: ClusterPanelProps) {
  if (!config && peers.length === 0) return null;
  const last = config?.lastReload ?? null;
  return (
    <Card variant="outlined" data-testid="cluster-panel">
      <CardContent>
        {config ? (
          <Box data-testid="config-info">
            <Typography variant="subtitle2">Config</Typography>
            <Typography variant="body2" color="text.secondary">
              {config.path ?? 'config'} loaded {config.loadedAt ? `at ${clock(config.loadedAt)}` : '—'}
            </Typography>
            {last ? (
              <Alert
                severity={!last.ok ? 'error' : last.needsRestart.length > 0 ? 'warning' : 'success'}
                sx={{ mt: 1 }}
                data-testid="last-reload"
              >
                {last.ok
                  ? `Reloaded (${last.trigger}) at ${clock(last.at)}: ${last.changes.length > 0 ? last.changes.join('; ') : 'nothing changed'}`
                  : `Not reloaded (${last.trigger}) at ${clock(last.at)}: ${last.error ?? 'unknown error'}; the config in use stays`}
                {last.ok && last.needsRestart.length > 0 ? ` — needs a restart: ${last.needsRestart.join(', ')}` : null}
              </Alert>
            ) : null}
          </Box>
        ) : null}
        {peers.length > 0 ? (
          <Box sx={{ mt: config ? 2 : 0 }} data-testid="peers">
            <Typography variant="subtitle2">Hosts</Typography>
            <Stack spacing={0.5} sx={{ mt: 0.5 }}>
              {peers.map((peer) => (
                <Stack key={peer.name} direction="row" spacing={1} sx={{ alignItems: 'center', flexWrap: 'wrap' }} data-testid="peer-row">
                  <Chip
                    size="small"
                    color={peer.reachable ? 'success' : 'error'}
                    label={peer.reachable ? 'reachable' : 'unreachable'}
                    data-testid="peer-reachable"
                  />
                  <Tooltip title={peer.url}>
                    <Typography variant="body2" sx={{ fontWeight: 600 }}>
                      {peer.name}
                    </Typography>
                  </Tooltip>
                  <Typography variant="body2" color="text.secondary">
                    {peer.models.length > 0 ? peer.models.join(', ') : 'no models'}
                  </Typography>
                  {peer.problem ? (
                    <Typography variant="caption" color="error" data-testid="peer-problem">
                      {peer.problem}
                    </Typography>
                  ) : null}
                </Stack>
              ))}
            </Stack>
          </Box>
        ) : null}
      </CardContent>
    </Card>
  );
}
