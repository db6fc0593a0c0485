import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { jsonResponse } from '../../test/fixtures';
import { historyFixture, modelMetrics, NOW_S } from '../../test/history';
import type { History } from '../../types/history';
import { HealthPage, type HealthPageProps } from './HealthPage';

const MODELS = [
  { id: 'a', state: 'ready', default: true },
  { id: 'b', state: 'ready', default: false },
];

function server(history: () => History | Response = () => historyFixture()) {
  return vi.fn(async (url: string, _init?: RequestInit) => {
    if (!url.startsWith('/api/history')) return jsonResponse({ detail: 'Not Found' }, 404);
    const answer = history();
    return answer instanceof Response ? answer : jsonResponse(answer);
  });
}

function renderPage(props: Partial<HealthPageProps> = {}, fetchImpl = server()) {
  const onSelect = vi.fn();
  const all: HealthPageProps = {
    models: MODELS,
    metrics: { a: modelMetrics() },
    livePoints: {},
    selected: null,
    onSelect,
    fetchImpl,
    chartWidth: 480,
    ...props,
  };
  const utils = render(<HealthPage {...all} />);
  return { ...utils, onSelect, fetchImpl, props: all };
}

const chart = (id: string) => screen.getByTestId(id);

describe('HealthPage', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: NOW_S * 1000, toFake: ['Date'] });
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  it('fetches a week of every model and the chosen range of the default model', async () => {
    const { fetchImpl } = renderPage();
    await screen.findByTestId('uptime-card');
    const urls = fetchImpl.mock.calls.map(([url]) => url);
    expect(urls).toContain(`/api/history?since=${NOW_S - 7 * 86_400}&limit=1000`);
    expect(urls).toContain(`/api/history?model=a&since=${NOW_S - 3600}&limit=1500`);
  });

  it('shows uptime, restarts, charts with points, load times and the requests', async () => {
    renderPage();
    const card = await screen.findByTestId('uptime-card');
    expect(within(card).getAllByTestId('uptime-row')).toHaveLength(2);
    expect(within(card).getAllByTestId('restart-marker')).toHaveLength(2); // a, on both bars

    expect(screen.getByTestId('health-model')).toHaveValue('a');
    await waitFor(() => expect(chart('chart-tps')).toHaveAttribute('data-points', '2'));
    expect(chart('chart-latency')).toHaveAttribute('data-points', '4'); // p50 and p95
    expect(chart('chart-memory')).toHaveAttribute('data-points', '2');
    expect(chart('chart-tps').querySelector('svg path.MuiLineChart-line')?.getAttribute('d')).toMatch(/^M[\d.]+,[\d.]+/);
    expect(chart('chart-tps').querySelectorAll('svg .MuiLineChart-mark')).toHaveLength(2);
    expect(chart('chart-load-times')).toHaveAttribute('data-points', '2');
    expect(chart('chart-load-times').querySelectorAll('svg circle')).toHaveLength(2);

    const restart = screen.getByTestId('restart-row');
    expect(restart).toHaveTextContent('killed by SIGKILL');
    expect(restart).toHaveTextContent('llama-server was killed by SIGKILL');
    expect(screen.getAllByTestId('request-row')).toHaveLength(4);

    expect(screen.getByTestId('health-now-tps')).toHaveTextContent('1235 tok/s');
    expect(screen.getByTestId('health-now-memory')).toHaveTextContent('20.0 MiB');
    expect(screen.getByTestId('health-now-slots')).toHaveTextContent('0/4');
    expect(screen.getByTestId('health-now-requests')).toHaveTextContent('4 · 1 failed');
  });

  it('details the model of the route, and asks to change it', async () => {
    const user = userEvent.setup();
    const { onSelect, fetchImpl } = renderPage({ selected: 'b' });
    expect(screen.getByTestId('health-model')).toHaveValue('b');
    await screen.findByTestId('uptime-card');
    expect(fetchImpl.mock.calls.map(([url]) => url)).toContain(`/api/history?model=b&since=${NOW_S - 3600}&limit=1500`);
    await waitFor(() => expect(chart('chart-load-times')).toHaveAttribute('data-points', '1'));
    expect(screen.getByTestId('restarts-none')).toBeInTheDocument();
    await user.selectOptions(screen.getByTestId('health-model'), 'a');
    expect(onSelect).toHaveBeenCalledWith('a');
  });

  it('fetches the chosen model again over a longer range', async () => {
    const user = userEvent.setup();
    const { fetchImpl } = renderPage();
    await screen.findByTestId('uptime-card');
    await user.click(screen.getByRole('button', { name: 'last 24 h' }));
    await waitFor(() =>
      expect(fetchImpl.mock.calls.map(([url]) => url)).toContain(`/api/history?model=a&since=${NOW_S - 86_400}&limit=1500`),
    );
  });

  it('continues the charts with the live readings after the last recorded minute', async () => {
    const live = [
      { at: (NOW_S - 500) * 1000, tokensPerSecond: 1, latencyP50Ms: 1, rssBytes: 1 }, // recorded since
      { at: (NOW_S + 3) * 1000, tokensPerSecond: 950, latencyP50Ms: 90, rssBytes: 21 * 1048576 },
    ];
    renderPage({ livePoints: { a: live } });
    await waitFor(() => expect(chart('chart-tps')).toHaveAttribute('data-points', '3'));
    expect(chart('chart-latency')).toHaveAttribute('data-points', '5'); // the live reading has no p95
    expect(chart('chart-memory')).toHaveAttribute('data-points', '3');
  });

  it('shows the store warning', async () => {
    renderPage({}, server(() => historyFixture({ store: { ok: false, warning: 'history store /x/history.db cannot be written: disk full' } })));
    expect(await screen.findByTestId('store-warning')).toHaveTextContent('cannot be written: disk full');
  });

  it('says when history is switched off, and charts the live readings alone', async () => {
    const live = [
      { at: (NOW_S - 20) * 1000, tokensPerSecond: 900, latencyP50Ms: 100, rssBytes: 20 * 1048576 },
      { at: (NOW_S - 10) * 1000, tokensPerSecond: 950, latencyP50Ms: 90, rssBytes: 20 * 1048576 },
    ];
    const { fetchImpl } = renderPage({ livePoints: { a: live } }, server(() => jsonResponse({ detail: 'Not Found' }, 404)));
    expect(await screen.findByTestId('history-disabled')).toHaveTextContent('History is switched off');
    expect(screen.queryByTestId('uptime-card')).not.toBeInTheDocument();
    expect(screen.queryByTestId('requests-card')).not.toBeInTheDocument();
    expect(chart('chart-tps')).toHaveAttribute('data-points', '2');
    expect(chart('chart-latency')).toHaveAttribute('data-points', '2'); // no p95 live
    expect(within(chart('chart-load-times')).getByTestId('chart-empty')).toHaveTextContent('Needs the history.');
    // The chosen model's query went out with the first, before the answer; never again.
    expect(fetchImpl.mock.calls.filter(([url]) => url.includes('model='))).toHaveLength(1);
  });

  it('says why a fetch failed', async () => {
    renderPage({}, server(() => jsonResponse({ error: { message: 'boom', type: 'internal' } }, 500)));
    expect(await screen.findByTestId('history-error')).toHaveTextContent('Could not fetch the history: boom');
  });

  it('fetches again when a model changes state', async () => {
    const { fetchImpl, rerender, props } = renderPage();
    await screen.findByTestId('uptime-card');
    const before = fetchImpl.mock.calls.length;
    rerender(<HealthPage {...props} models={[{ ...MODELS[0]!, state: 'crashed' }, MODELS[1]!]} />);
    await waitFor(() => expect(fetchImpl.mock.calls.length).toBe(before + 2));
  });

  it('shows empty charts as such', async () => {
    renderPage({ metrics: {} }, server(() => historyFixture({ minutes: [], starts: [] })));
    await screen.findByTestId('uptime-card');
    await waitFor(() => expect(within(chart('chart-tps')).getByTestId('chart-empty')).toHaveTextContent('No request answered in this range.'));
    expect(chart('chart-tps')).toHaveAttribute('data-points', '0');
    expect(chart('chart-tps').querySelector('svg')).toBeNull();
    expect(screen.queryByTestId('health-now')).not.toBeInTheDocument();
  });
});
