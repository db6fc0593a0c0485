import AppBar from '@mui/material/AppBar';
import Box from '@mui/material/Box';
import Chip from '@mui/material/Chip';
import Container from '@mui/material/Container';
import CssBaseline from '@mui/material/CssBaseline';
import Grid from '@mui/material/Grid';
import Stack from '@mui/material/Stack';
import { ThemeProvider } from '@mui/material/styles';
import Toolbar from '@mui/material/Toolbar';
import Typography from '@mui/material/Typography';
import useMediaQuery from '@mui/material/useMediaQuery';
import { useEffect, useMemo } from 'react';
import type { FetchLike } from './api/client';
import { LlamaControls } from './components/ui/LlamaControls';
import { LlamaStatusCard } from './components/ui/LlamaStatusCard';
import { LogsPanel } from './components/ui/LogsPanel';
import { ModelsTable } from './components/ui/ModelsTable';
import { Playground } from './components/ui/Playground';
import { UnreachableBanner } from './components/ui/UnreachableBanner';
import { useHealth } from './hooks/useHealth';
import { useLlamaLogs } from './hooks/useLlamaLogs';
import { useLlamaModels } from './hooks/useLlamaModels';
import { useLlamaSocket } from './hooks/useLlamaSocket';
import { useLlamaStatus, type ConnectionState } from './hooks/useLlamaStatus';
import { createLlamaSocket, llamaherdOrigin, type SocketFactory } from './lib/socket';
import { makeTheme } from './theme';

export interface AppProps {
  /** llamaherd's URL; the page's own origin by default. */
  url?: string;
  socketFactory?: SocketFactory;
  fetchImpl?: FetchLike;
}

const CONNECTION_CHIP: Record<ConnectionState, { label: string; color: 'success' | 'default' | 'error' }> = {
  connected: { label: 'live', color: 'success' },
  connecting: { label: 'connecting…', color: 'default' },
  disconnected: { label: 'offline', color: 'error' },
};

function Dashboard({ url, socketFactory = createLlamaSocket, fetchImpl }: AppProps) {
  const socket = useLlamaSocket(url, socketFactory);
  const llama = useLlamaStatus({ socket });
  const logs = useLlamaLogs({ socket, fetchImpl });
  const gateway = useLlamaModels({ socket });
  const health = useHealth(llama.connected, fetchImpl);
  const origin = useMemo(() => llamaherdOrigin(url), [url]);
  const chip = CONNECTION_CHIP[llama.connection];

  useEffect(() => {
    document.title = llama.isLoading ? 'llamaherd' : `llamaherd · ${llama.status}`;
  }, [llama.isLoading, llama.status]);

  return (
    <Box sx={{ minHeight: '100vh', bgcolor: 'background.default' }}>
      <AppBar position="sticky" color="default" elevation={0} sx={{ borderBottom: 1, borderColor: 'divider' }}>
        <Toolbar variant="dense" sx={{ gap: 1 }}>
          <Typography variant="h6" component="h1" sx={{ fontWeight: 700 }}>
            llamaherd
          </Typography>
          <Typography variant="body2" color="text.secondary" data-testid="app-version">
            {health ? `v${health.version}` : ''}
          </Typography>
          <Box sx={{ flexGrow: 1 }} />
          <Chip size="small" variant="outlined" color={chip.color} label={chip.label} data-testid="connection-state" />
        </Toolbar>
      </AppBar>

      <Container maxWidth="xl" sx={{ py: { xs: 2, md: 3 }, px: { xs: 1, sm: 2, md: 3 } }}>
        <Stack spacing={2}>
          {llama.connection === 'disconnected' ? (
            <UnreachableBanner origin={origin} detail={llama.connectionError} />
          ) : null}
          <Grid container spacing={2}>
            <Grid size={{ xs: 12, md: 5, lg: 4 }}>
              <LlamaStatusCard {...llama}>
                <LlamaControls
                  status={llama.isLoading ? null : llama.status}
                  onDone={llama.refresh}
                  fetchImpl={fetchImpl}
                />
              </LlamaStatusCard>
            </Grid>
            <Grid size={{ xs: 12, md: 7, lg: 8 }}>
              <LogsPanel lines={logs.lines} loading={logs.loading} error={logs.error} onClear={logs.clear} />
            </Grid>
            <Grid size={12}>
              <ModelsTable
                models={gateway.models}
                isLoading={gateway.isLoading}
                pending={gateway.pending}
                connected={llama.connected}
                onLoad={gateway.load}
                onUnload={gateway.unload}
              />
            </Grid>
            <Grid size={12}>
              <Playground models={gateway.models} defaultId={gateway.defaultId} fetchImpl={fetchImpl} />
            </Grid>
          </Grid>
        </Stack>
      </Container>
    </Box>
  );
}

export default function App(props: AppProps) {
  const prefersDark = useMediaQuery('(prefers-color-scheme: dark)');
  const theme = useMemo(() => makeTheme(prefersDark ? 'dark' : 'light'), [prefersDark]);
  return (
    <ThemeProvider theme={theme}>
      <CssBaseline enableColorScheme />
      <Dashboard {...props} />
    </ThemeProvider>
  );
}
