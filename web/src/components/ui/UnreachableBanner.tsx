import Alert from '@mui/material/Alert';
import Box from '@mui/material/Box';

export interface UnreachableBannerProps {
  origin: string;
  /** The connection error, shown on hover. */
  detail?: string | null;
}

/** Shown while the socket to llamaherd itself is down (socket.io keeps retrying meanwhile). */
export function UnreachableBanner({ origin, detail }: UnreachableBannerProps) {
  return (
    <Alert
      severity="error"
      variant="filled"
      role="alert"
      data-testid="unreachable-banner"
      title={detail ? `Retrying… (${detail})` : 'Retrying…'}
    >
      Cannot reach llamaherd at {origin} — is{' '}
      <Box component="code" sx={{ fontFamily: 'monospace', fontWeight: 600 }}>
        llamaherd serve
      </Box>{' '}
      running?
    </Alert>
  );
}
