import Alert from '@mui/material/Alert';
import AppBar from '@mui/material/AppBar';
import Box from '@mui/material/Box';
import Button from '@mui/material/Button';
import Chip from '@mui/material/Chip';
import Container from '@mui/material/Container';
import CssBaseline from '@mui/material/CssBaseline';
import Grid from '@mui/material/Grid';
import Link from '@mui/material/Link';
import Skeleton from '@mui/material/Skeleton';
import Stack from '@mui/material/Stack';
import { ThemeProvider } from '@mui/material/styles';
import Tab from '@mui/material/Tab';
import Tabs from '@mui/material/Tabs';
import Toolbar from '@mui/material/Toolbar';
import Typography from '@mui/material/Typography';
import useMediaQuery from '@mui/material/useMediaQuery';
import { lazy, Suspense, useCallback, useEffect, useMemo } from 'react';
import { checkApiKey, removeModel, type FetchLike } from './api/client';
import { AddModelButton } from './components/pulls/AddModelButton';
import { PullsList } from './components/pulls/PullsList';
import { ApiKeyDialog } from './components/ui/ApiKeyDialog';
import { LlamaControls } from './components/ui/LlamaControls';
import { LlamaStatusCard } from './components/ui/LlamaStatusCard';
import { LogsPanel } from './components/ui/LogsPanel';
import { ClusterPanel } from './components/ui/ClusterPanel';
import { ModelsTable } from './components/ui/ModelsTable';
import { Playground } from './components/ui/Playground';
import { UnreachableBanner } from './components/ui/UnreachableBanner';
import { useApiKey } from './hooks/useApiKey';
import { routeHash, useHashRoute } from './hooks/useHashRoute';
import { useHealth } from './hooks/useHealth';
import { useLlamaLogs } from './hooks/useLlamaLogs';
import { useLlamaMetrics } from './hooks/useLlamaMetrics';
import { useLlamaModels } from './hooks/useLlamaModels';
import { useLlamaSocket } from './hooks/useLlamaSocket';
import { useLlamaStatus, type ConnectionState } from './hooks/useLlamaStatus';
import { usePulls } from './hooks/usePulls';
import { apiKeyStore } from './lib/apiKey';
import { removableModels } from './lib/pulls';
import { createLlamaSocket, llamaherdOrigin, type SocketFactory } from './lib/socket';
import { makeTheme } from './theme';
import type { GatewayModel } from './types/gateway';

// The health view and its charts load only when it is first shown: most visits never need them.
const HealthPage = lazy(() => import('./components/health/HealthPage').then((m) => ({ default: m.HealthPage })));

export interface AppProps {
  /** llamaherd's URL; the page's own origin by default. */
  url?: string;
  socketFactory?: SocketFactory;
  fetchImpl?: FetchLike;
}

type ChipLook = { label: string; color: 'success' | 'default' | 'error' | 'warning' };

const CONNECTION_CHIP: Record<ConnectionState, ChipLook> = {
  connected: { label: 'live', color: 'success' },
  connecting: { label: 'connecting…', color: 'default' },
  disconnected: { label: 'offline', color: 'error' },
};
const KEY_NEEDED_CHIP: ChipLook = { label: 'key needed', color: 'warning' };

interface DashboardProps extends AppProps {
  /** A key is kept for this tab (the header offers to forget it). */
  hasKey: boolean;
  /** llamaherd refuses the page's key (or its lack of one): the key dialog is up. */
  keyRefused: boolean;
}

/** The address of the status view showing `id`'s card and logs. */
const statusOf = (id: string) => routeHash({ view: 'status', model: id });

/** The model the address names (an id, or an alias), among those served; null if none. */
function findModel(models: GatewayModel[], name: string): GatewayModel | null {
  return models.find((m) => m.id === name) ?? models.find((m) => m.aliases.includes(name)) ?? null;
}

function Dashboard({ url, socketFactory = createLlamaSocket, fetchImpl, hasKey, keyRefused }: DashboardProps) {
  const route = useHashRoute();
  const socket = useLlamaSocket(url, socketFactory);
  const gateway = useLlamaModels({ socket });
  // The model whose card and logs the status view shows: the address's choice, else the
  // primary model (the seed's llamaStatus and /api/llama/*). The choice is taken as an id
  // until the list of models says otherwise.
  const chosen = route.view === 'status' ? route.model : null;
  const chosenModel = chosen === null ? null : findModel(gateway.models, chosen);
  const shown = chosen === null ? null : (chosenModel?.id ?? (gateway.isLoading ? chosen : null));
  const unknownChoice = chosen !== null && shown === null;
  const primaryId = gateway.defaultId ?? gateway.models[0]?.id ?? null;
  const llama = useLlamaStatus({ socket, model: shown });
  // Logs are the chatty stream: followed only while the status view shows them.
  const logs = useLlamaLogs({ socket: route.view === 'status' ? socket : null, model: shown, fetchImpl });
  const metrics = useLlamaMetrics({ socket });
  const selectModel = useCallback((id: string) => {
    window.location.hash = routeHash({ view: 'health', model: id });
  }, []);
  const health = useHealth(llama.connected, fetchImpl);
  const pulls = usePulls({ socket, fetchImpl });
  const removable = useMemo(() => removableModels(gateway.models, pulls.pulls), [gateway.models, pulls.pulls]);
  const remove = useCallback((id: string) => removeModel(id, fetchImpl), [fetchImpl]);
  const origin = useMemo(() => llamaherdOrigin(url), [url]);
  // A refused key is not an unreachable llamaherd: the key dialog says what is wrong.
  const chip = keyRefused ? KEY_NEEDED_CHIP : CONNECTION_CHIP[llama.connection];

  useEffect(() => {
    const whose = shown ? ` · ${shown}` : '';
    document.title = llama.isLoading ? 'llamaherd' : `llamaherd${whose} · ${llama.status}`;
  }, [llama.isLoading, llama.status, shown]);

  return (
    <Box sx={{ minHeight: '100vh', bgcolor: 'background.default' }}>
      <AppBar position="sticky" color="default" elevation={0} sx={{ borderBottom: 1, borderColor: 'divider' }}>
        <Toolbar variant="dense" sx={{ gap: 1 }}>
          <Typography variant="h6" component="h1" sx={{ fontWeight: 700 }}>
            llamaherd
          </Typography>
          <Typography
            variant="body2"
            color="text.secondary"
            data-testid="app-version"
            sx={{ display: { xs: 'none', sm: 'block' } }}
          >
            {health ? `v${health.version}` : ''}
          </Typography>
          <Tabs
            value={route.view}
            aria-label="views"
            sx={{ minHeight: 48, ml: { xs: 0, sm: 2 }, '& .MuiTab-root': { minHeight: 48, minWidth: 0, px: { xs: 1, sm: 2 } } }}
          >
            <Tab label="Status" value="status" component="a" href="#/" data-testid="nav-status" />
            <Tab label="Health" value="health" component="a" href="#/health" data-testid="nav-health" />
          </Tabs>
          <Box sx={{ flexGrow: 1 }} />
          {hasKey ? (
            <Button size="small" color="inherit" data-testid="forget-key" onClick={() => apiKeyStore.forget()}>
              Forget key
            </Button>
          ) : null}
          <Chip size="small" variant="outlined" color={chip.color} label={chip.label} data-testid="connection-state" />
        </Toolbar>
      </AppBar>

      <Container maxWidth="xl" sx={{ py: { xs: 2, md: 3 }, px: { xs: 1, sm: 2, md: 3 } }}>
        <Stack spacing={2}>
          {llama.connection === 'disconnected' && !keyRefused ? (
            <UnreachableBanner origin={origin} detail={llama.connectionError} />
          ) : null}
          {route.view === 'health' ? (
            <Suspense fallback={<Skeleton variant="rounded" height={240} data-testid="health-loading" />}>
              <HealthPage
                models={gateway.models}
                modelsLoading={gateway.isLoading}
                metrics={metrics.byId}
                livePoints={metrics.points}
                clockOffsetMs={metrics.clockOffsetMs}
                selected={route.model}
                onSelect={selectModel}
                fetchImpl={fetchImpl}
              />
            </Suspense>
          ) : (
            <Grid container spacing={2}>
              {unknownChoice ? (
                <Grid size={12}>
                  <Alert severity="warning" data-testid="unknown-model">
                    No model “{chosen}” is served here; showing the primary model instead.{' '}
                    <Link href={routeHash({ view: 'status', model: null })}>Show the primary model</Link>
                  </Alert>
                </Grid>
              ) : null}
              <Grid size={{ xs: 12, md: 5, lg: 4 }}>
                <LlamaStatusCard {...llama} model={shown ?? primaryId} primary={(shown ?? primaryId) === primaryId}>
                  <LlamaControls
                    // Another model's controls start afresh: no spinner of the last one's action.
                    key={shown ?? ''}
                    model={shown}
                    status={llama.isLoading ? null : llama.status}
                    onDone={llama.refresh}
                    fetchImpl={fetchImpl}
                  />
                </LlamaStatusCard>
              </Grid>
              <Grid size={{ xs: 12, md: 7, lg: 8 }}>
                <LogsPanel
                  lines={logs.lines}
                  loading={logs.loading}
                  error={logs.error}
                  onClear={logs.clear}
                  model={shown ?? primaryId}
                />
              </Grid>
              <Grid size={12}>
                <ModelsTable
                  models={gateway.models}
                  isLoading={gateway.isLoading}
                  pending={gateway.pending}
                  connected={llama.connected}
                  onLoad={gateway.load}
                  onUnload={gateway.unload}
                  metrics={metrics.byId}
                  selected={shown ?? primaryId}
                  linkTo={statusOf}
                  // Pulling and removing are the admin's, like every control here: the dashboard
                  // runs only with an admin key (or where llamaherd asks for none).
                  headerAction={<AddModelButton onPull={pulls.start} />}
                  removable={removable}
                  onRemove={remove}
                >
                  <PullsList pulls={pulls.pulls} onCancel={pulls.cancel} error={pulls.error} />
                </ModelsTable>
              </Grid>
              <Grid size={12}>
                <ClusterPanel config={gateway.config} peers={gateway.peers} />
              </Grid>
              <Grid size={12}>
                <Playground models={gateway.models} defaultId={gateway.defaultId} fetchImpl={fetchImpl} />
              </Grid>
            </Grid>
          )}
        </Stack>
      </Container>
    </Box>
  );
}

export default function App(props: AppProps) {
  const prefersDark = useMediaQuery('(prefers-color-scheme: dark)');
  const theme = useMemo(() => makeTheme(prefersDark ? 'dark' : 'light'), [prefersDark]);
  const auth = useApiKey();
  const { fetchImpl } = props;
  const check = useCallback((key: string) => checkApiKey(key, fetchImpl), [fetchImpl]);
  const accept = useCallback((key: string) => apiKeyStore.use(key), []);
  return (
    <ThemeProvider theme={theme}>
      <CssBaseline enableColorScheme />
      {/* A new key (or none) makes a new dashboard: a new socket whose handshake carries it,
          and every REST fetch again, so nothing fetched with the old key lingers. */}
      <Dashboard key={auth.generation} {...props} hasKey={auth.key !== null} keyRefused={auth.problem !== null} />
      <ApiKeyDialog open={auth.problem !== null} problem={auth.problem} check={check} onAccepted={accept} />
    </ThemeProvider>
  );
}
