import { act, render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it, vi } from 'vitest';
import App from './App';
import { FakeSocket } from './test/fakeSocket';
import { jsonResponse, modelLogEvent, modelsEvent, modelStatusEvent, statusData, statusEvent } from './test/fixtures';
import { historyFixture, metricsEvent, modelMetrics } from './test/history';

// The health view is a lazy chunk (with the charts): its first import can take longer than
// findBy's one second when the test workers share a busy machine.
const LAZY_VIEW = { timeout: 5000 };

function fakeServer() {
  const socket = new FakeSocket();
  const fetchImpl = vi.fn(async (url: string, init?: RequestInit) => {
    if (url === '/healthz') return jsonResponse({ status: 'ok', name: 'llamaherd', version: '0.1.0' });
    if (url.startsWith('/api/llama/logs')) return jsonResponse({ lines: ['llama-server: listening'] });
    if (url.startsWith('/api/history')) return jsonResponse(historyFixture());
    if (url === '/api/llama/restart' && init?.method === 'POST') {
      return jsonResponse({ status: statusData({ status: 'starting', models: [], startedAt: null }) });
    }
    if (url.startsWith('/api/models/b/logs')) return jsonResponse({ model: 'b', lines: ['b: listening'] });
    if (url === '/api/models/b/restart' && init?.method === 'POST') {
      return jsonResponse({ status: { ...statusData({ status: 'starting', startedAt: null }), model: 'b' } });
    }
    return jsonResponse({ error: { message: 'not found', type: 'not_found' } }, 404);
  });
  return { socket, fetchImpl };
}

/** The app on a connected socket that has heard `events` ([name, payload]) from the server. */
function renderConnected(...events: Array<[string, unknown]>) {
  const server = fakeServer();
  render(<App socketFactory={() => server.socket} fetchImpl={server.fetchImpl} />);
  act(() => {
    server.socket.serverConnect();
    for (const [name, payload] of events) server.socket.serverEmit(name, payload);
  });
  return server;
}

describe('App', () => {
  afterEach(() => {
    window.location.hash = '';
  });

  it('puts status, version, models and logs on one page', async () => {
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);

    expect(socket.connectCalls).toBe(1);
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaStatus', statusEvent());
    });

    expect(screen.getByRole('heading', { name: 'llamaherd' })).toBeInTheDocument();
    expect(await screen.findByText('v0.1.0')).toBeInTheDocument();
    expect(screen.getByTestId('status-badge')).toHaveTextContent(/^ready$/);
    expect(screen.getAllByTestId('model-row')).toHaveLength(2);
    expect(screen.getByTestId('logs-panel')).toHaveTextContent('llama-server: listening');
    expect(screen.queryByTestId('unreachable-banner')).not.toBeInTheDocument();
    expect(document.title).toBe('llamaherd · ready');

    act(() => socket.serverEmit('llamaLog', { type: 'llama_log', data: { lines: ['new line'] }, timestamp: 2 }));
    expect(screen.getByTestId('logs-panel')).toHaveTextContent('new line');
  });

  it('shows the unreachable banner while llamaherd is down', async () => {
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    expect(screen.queryByTestId('unreachable-banner')).not.toBeInTheDocument();

    act(() => socket.connectError('xhr poll error'));
    const banner = screen.getByTestId('unreachable-banner');
    expect(banner).toHaveTextContent(
      new RegExp(`^Cannot reach llamaherd at ${window.location.origin} — is llamaherd serve running\\?$`),
    );
    expect(banner).toHaveAttribute('title', 'Retrying… (xhr poll error)');
    expect(screen.getByTestId('connection-state')).toHaveTextContent('offline');

    act(() => socket.serverConnect());
    expect(screen.queryByTestId('unreachable-banner')).not.toBeInTheDocument();
    expect(socket.emitCount('requestLlamaStatus')).toBe(1);

    act(() => socket.serverDisconnect('transport close'));
    expect(screen.getByTestId('unreachable-banner')).toBeInTheDocument();
    act(() => socket.serverConnect());
    expect(socket.emitCount('requestLlamaStatus')).toBe(2);
  });

  it('names the configured URL in the banner', () => {
    const { socket, fetchImpl } = fakeServer();
    render(<App url="http://127.0.0.1:3000" socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => socket.connectError());
    expect(screen.getByTestId('unreachable-banner')).toHaveTextContent('Cannot reach llamaherd at http://127.0.0.1:3000');
  });

  it('asks for the live status again after a control action', async () => {
    const user = userEvent.setup();
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaStatus', statusEvent());
    });
    expect(socket.emitCount('requestLlamaStatus')).toBe(1);
    await user.click(screen.getByTestId('btn-restart'));
    expect(await screen.findByTestId('action-result')).toHaveTextContent('Restart requested');
    expect(socket.emitCount('requestLlamaStatus')).toBe(2);
    // The answer's (older) state is not shown over the live one.
    expect(screen.getByTestId('status-badge')).toHaveTextContent(/^ready$/);
  });

  it('enables only the controls that make sense in the live state', () => {
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    const state = () =>
      ['btn-start', 'btn-stop', 'btn-restart'].map((id) => !(screen.getByTestId(id) as HTMLButtonElement).disabled);
    // No status yet: nothing to act on.
    expect(state()).toEqual([false, false, false]);

    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaStatus', statusEvent());
    });
    expect(state()).toEqual([false, true, true]);
    act(() => socket.serverEmit('llamaStatus', statusEvent({ status: 'initial', models: [], startedAt: null })));
    expect(state()).toEqual([true, false, false]);
  });

  it('connects again, once, after llamaherd closed the socket on purpose', () => {
    vi.useFakeTimers();
    try {
      const { socket, fetchImpl } = fakeServer();
      render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
      act(() => socket.serverConnect());
      expect(socket.connectCalls).toBe(1);
      act(() => socket.serverDisconnect('io server disconnect'));
      act(() => vi.advanceTimersByTime(5000));
      expect(socket.connectCalls).toBe(2);
    } finally {
      vi.useRealTimers();
    }
  });

  it('shows the gateway models and the playground, and loads a model over the socket', async () => {
    const user = userEvent.setup();
    const { socket } = renderConnected(['llamaStatus', statusEvent()], ['llamaModels', modelsEvent()]);
    expect(socket.emitCount('requestLlamaModels')).toBe(1);
    expect(screen.getAllByTestId('gw-model-row')).toHaveLength(2);
    // The status card's own model list is a different list.
    expect(screen.getAllByTestId('model-row')).toHaveLength(2);
    expect(screen.getByTestId('playground-model')).toHaveValue('a');

    const load = screen.getAllByTestId('btn-load')[1] as HTMLElement;
    await user.click(load);
    const sent = socket.emitted.find((e) => e.event === 'loadModel');
    expect(sent?.args[0]).toEqual({ id: 'b' });
    act(() => (sent?.args[1] as (ack: unknown) => void)({ ok: false, error: 'memory_budget_mb is too small for b' }));
    expect(await screen.findByTestId('model-action-result')).toHaveTextContent('Load b failed: memory_budget_mb is too small for b');
  });

  it('disconnects on unmount', () => {
    const { socket, fetchImpl } = fakeServer();
    const { unmount } = render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => socket.serverConnect());
    unmount();
    expect(socket.disconnectCalls).toBe(1);
    expect(socket.listenerCount()).toBe(0);
  });

  it('shows the live speed in the models table', () => {
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent());
      socket.serverEmit('llamaMetrics', metricsEvent([modelMetrics({ tokensPerSecond: 42 })]));
    });
    expect(socket.emitCount('requestLlamaMetrics')).toBe(1);
    expect(screen.getAllByTestId('gw-tps').map((c) => c.textContent)).toEqual(['42.0 tok/s', '—']);
  });

  it('switches to the health view and back, following the logs only on the status view', async () => {
    const user = userEvent.setup();
    const { socket, fetchImpl } = renderConnected(['llamaStatus', statusEvent()], ['llamaModels', modelsEvent()]);
    expect(screen.getByTestId('nav-status')).toHaveAttribute('aria-selected', 'true');
    expect(socket.emitCount('subscribeLlamaLogs')).toBe(1);

    await user.click(screen.getByTestId('nav-health'));
    expect(window.location.hash).toBe('#/health');
    expect(await screen.findByTestId('uptime-card', {}, LAZY_VIEW)).toBeInTheDocument();
    expect(screen.getByTestId('nav-health')).toHaveAttribute('aria-selected', 'true');
    expect(screen.queryByTestId('logs-panel')).not.toBeInTheDocument();
    expect(socket.emitCount('unsubscribeLlamaLogs')).toBe(1);
    expect(fetchImpl.mock.calls.some(([url]) => url.startsWith('/api/history'))).toBe(true);

    // Choosing a model puts it in the address.
    await user.selectOptions(screen.getByTestId('health-model'), 'b');
    expect(window.location.hash).toBe('#/health/b');
    await waitFor(() => expect(screen.getByTestId('health-model')).toHaveValue('b'));

    await user.click(screen.getByTestId('nav-status'));
    expect(await screen.findByTestId('logs-panel')).toBeInTheDocument();
    expect(screen.queryByTestId('health-page')).not.toBeInTheDocument();
    expect(socket.emitCount('subscribeLlamaLogs')).toBe(2);
  });

  it("shows the chosen model's card, logs and controls, and keeps the choice in the address", async () => {
    const user = userEvent.setup();
    const { socket, fetchImpl } = renderConnected(['llamaStatus', statusEvent()], ['llamaModels', modelsEvent()]);
    // The primary's card, named.
    expect(screen.getByTestId('status-model')).toHaveTextContent('a');
    expect(screen.getByTestId('status-card')).toHaveTextContent('Model a · primary');

    await user.click(within(screen.getAllByTestId('gw-model-row')[1] as HTMLElement).getByTestId('gw-model-link'));
    expect(window.location.hash).toBe('#/status/b');
    await waitFor(() => expect(screen.getByTestId('status-model')).toHaveTextContent('b'));
    expect(screen.getByTestId('status-card')).not.toHaveTextContent('primary');
    expect(screen.getAllByTestId('gw-model-row')[1]).toHaveAttribute('aria-selected', 'true');
    expect(socket.emitted.filter((e) => e.event === 'requestLlamaModelStatus').map((e) => e.args)).toEqual([[{ model: 'b' }]]);
    expect(socket.emitted.filter((e) => e.event === 'subscribeLlamaLogs').at(-1)?.args).toEqual([{ model: 'b' }]);
    await waitFor(() => expect(screen.getByTestId('logs-panel')).toHaveTextContent('b: listening'));
    expect(screen.getByTestId('logs-model')).toHaveTextContent('b');

    act(() => {
      socket.serverEmit('llamaModelStatus', modelStatusEvent('b', { status: 'initial', pid: null, startedAt: null }));
      socket.serverEmit('llamaLog', modelLogEvent('a', 'a says this'));
      socket.serverEmit('llamaLog', modelLogEvent('b', 'b says this'));
    });
    expect(screen.getByTestId('status-badge')).toHaveTextContent(/^initial$/);
    expect(document.title).toBe('llamaherd · b · initial');
    expect(screen.getByTestId('logs-panel')).toHaveTextContent('b says this');
    expect(screen.getByTestId('logs-panel')).not.toHaveTextContent('a says this');

    await user.click(screen.getByTestId('btn-start'));
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/b/start', expect.objectContaining({ method: 'POST' }));
  });

  it('opens on the chosen model when the address names it, by id or alias', async () => {
    window.location.hash = '#/status/bee';
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    const [a, b] = modelsEvent().data.models;
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent([a!, { ...b!, aliases: ['bee'] }]));
    });
    // The alias is taken for an id until the list says whose it is; then b's status is asked for.
    expect(socket.emitted.filter((e) => e.event === 'requestLlamaModelStatus').map((e) => e.args)).toEqual([
      [{ model: 'bee' }],
      [{ model: 'b' }],
    ]);
    act(() => socket.serverEmit('llamaModelStatus', modelStatusEvent('b', { pid: 77 })));
    expect(screen.getByTestId('status-model')).toHaveTextContent('b');
    expect(screen.getByTestId('pid')).toHaveTextContent('77');
    await waitFor(() => expect(screen.getByTestId('logs-panel')).toHaveTextContent('b: listening'));
  });

  it('says so when the address names a model that is not served, and shows the primary', () => {
    window.location.hash = '#/status/nope';
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent());
    });
    // Not served: the primary's status is asked for instead (and arrives).
    expect(socket.emitCount('requestLlamaStatus')).toBe(1);
    act(() => socket.serverEmit('llamaStatus', statusEvent()));
    expect(screen.getByTestId('unknown-model')).toHaveTextContent('No model “nope” is served here');
    expect(screen.getByTestId('status-model')).toHaveTextContent('a');
    expect(screen.getByTestId('status-badge')).toHaveTextContent(/^ready$/);
  });

  it('opens on the health view when the address names it', async () => {
    window.location.hash = '#/health/b';
    const { socket, fetchImpl } = fakeServer();
    render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
    act(() => {
      socket.serverConnect();
      socket.serverEmit('llamaModels', modelsEvent());
    });
    expect(await screen.findByTestId('health-model', {}, LAZY_VIEW)).toHaveValue('b');
  });
});

