import { act, render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { LiveModel } from '../../hooks/useLlamaModels';
import { gatewayModel, TWO_MODELS } from '../../test/fixtures';
import { modelMetrics } from '../../test/history';
import type { GatewayModel, ModelActionAck } from '../../types/gateway';
import { ModelsTable, type ModelsTableProps } from './ModelsTable';

const T0 = Date.parse('2025-12-26T11:00:00Z');

function live(model: GatewayModel, extra: Partial<LiveModel> = {}): LiveModel {
  return { ...model, lastUsedLocal: model.lastUsed, receivedAt: T0, loadRequested: false, ...extra };
}

const ok = (model: GatewayModel): Promise<ModelActionAck> => Promise.resolve({ ok: true, model });

function renderTable(props: Partial<ModelsTableProps> = {}) {
  const onLoad = vi.fn((id: string) => ok(gatewayModel({ id, phase: 'loading' })));
  const onUnload = vi.fn((id: string) => ok(gatewayModel({ id, phase: 'ready', draining: true })));
  const utils = render(
    <ModelsTable models={TWO_MODELS.map((m) => live(m))} onLoad={onLoad} onUnload={onUnload} {...props} />,
  );
  return { onLoad, onUnload, ...utils };
}

const row = (id: string) => {
  const found = screen.getAllByTestId('gw-model-row').find((r) => r.getAttribute('data-model-id') === id);
  if (!found) throw new Error(`no row for ${id}`);
  return within(found);
};

describe('ModelsTable', () => {
  it('marks a preloaded model with its place in the order', () => {
    renderTable({ models: [live(gatewayModel({ preload: 2 }))] });
    expect(screen.getByTestId('gw-preload-mark')).toHaveTextContent('preload 2');
  });

  afterEach(() => {
    vi.useRealTimers();
  });

  it('shows one row per model with its state, marks, load and file', () => {
    renderTable();
    expect(screen.getAllByTestId('gw-model-row')).toHaveLength(2);
    expect(screen.getByTestId('gw-summary')).toHaveTextContent('2 served · 1 loaded');

    const a = row('a');
    expect(a.getByTestId('gw-state')).toHaveTextContent(/^ready$/);
    expect(a.getByTestId('gw-state')).toHaveAttribute('data-phase', 'ready');
    expect(a.getByTestId('gw-default-mark')).toBeInTheDocument();
    expect(a.queryByTestId('gw-pinned-mark')).not.toBeInTheDocument();
    expect(a.getByTestId('gw-in-flight')).toHaveTextContent('0/4');
    expect(a.getByTestId('gw-size')).toHaveTextContent('428.8 KiB');
    expect(a.getByTestId('gw-quant')).toHaveTextContent('F32 · llama');

    const b = row('b');
    expect(b.getByTestId('gw-state')).toHaveTextContent(/^unloaded$/);
    expect(b.queryByTestId('gw-default-mark')).not.toBeInTheDocument();
    expect(b.getByTestId('gw-size')).toHaveTextContent('4.0 GiB');
    expect(b.getByTestId('gw-quant')).toHaveTextContent('Q4_K_M · llama');
    expect(b.getByTestId('gw-last-used')).toHaveTextContent('—');
  });

  it.each([
    ['unloaded', true, false],
    ['loading', false, true],
    ['ready', false, true],
    ['unloading', true, false],
    ['failed', true, true],
  ])('in %s: load %s, unload %s', (phase, load, unload) => {
    renderTable({ models: [live(gatewayModel({ phase }))] });
    const r = row('a');
    expect((r.getByTestId('btn-load') as HTMLButtonElement).disabled).toBe(!load);
    expect((r.getByTestId('btn-unload') as HTMLButtonElement).disabled).toBe(!unload);
  });

  it('shows a load that waits for room as requested, and does not offer it again', () => {
    renderTable({ models: [live(TWO_MODELS[1] as GatewayModel, { loadRequested: true })] });
    const b = row('b');
    expect(b.getByTestId('gw-state')).toHaveTextContent(/^load requested$/);
    expect(b.getByTestId('btn-load')).toBeDisabled();
    expect(b.getByTestId('btn-unload')).toBeDisabled();
  });

  it('shows draining, pinned, a queue, what requests wait for and the last error', () => {
    renderTable({
      models: [
        live(
          gatewayModel({
            draining: true,
            inFlight: 3,
            queued: 5,
            pinned: true,
            waitingFor: 'room: a is finishing 3 requests',
            lastError: 'llama-server exited with code 1: failed to load model',
          }),
        ),
      ],
    });
    const a = row('a');
    expect(a.getByTestId('gw-state')).toHaveTextContent(/^draining$/);
    expect(a.getByTestId('gw-state')).toHaveAttribute('data-draining', 'true');
    expect(a.getByTestId('gw-pinned-mark')).toBeInTheDocument();
    expect(a.getByTestId('gw-in-flight')).toHaveTextContent('3/4');
    expect(a.getByTestId('gw-queued')).toHaveTextContent('5');
    expect(a.getByTestId('gw-waiting')).toHaveTextContent('waiting: room: a is finishing 3 requests');
    expect(a.getByTestId('gw-last-error')).toHaveTextContent('llama-server exited with code 1: failed to load model');
  });

  it('ticks "last used" and the TTL left between events', () => {
    vi.useFakeTimers({ now: T0 });
    renderTable({
      models: [live(gatewayModel({ ttlSeconds: 300, ttlLeft: 288 }), { lastUsedLocal: T0 - 12_000 })],
    });
    const a = row('a');
    expect(a.getByTestId('gw-last-used')).toHaveTextContent('12 s ago');
    expect(a.getByTestId('gw-ttl-left')).toHaveTextContent('4m 48s');
    act(() => vi.advanceTimersByTime(3000));
    expect(a.getByTestId('gw-last-used')).toHaveTextContent('15 s ago');
    expect(a.getByTestId('gw-ttl-left')).toHaveTextContent('4m 45s');
  });

  it('loads a model and says so', async () => {
    const user = userEvent.setup();
    const { onLoad } = renderTable();
    await user.click(row('b').getByTestId('btn-load'));
    expect(onLoad).toHaveBeenCalledWith('b');
    expect(await screen.findByTestId('model-action-result')).toHaveTextContent('Loading b…');
  });

  it('shows a refusal as an error', async () => {
    const user = userEvent.setup();
    renderTable({ onUnload: vi.fn(async () => ({ ok: false as const, error: 'not connected to llamaherd' })) });
    await user.click(row('a').getByTestId('btn-unload'));
    const result = await screen.findByTestId('model-action-result');
    expect(result).toHaveTextContent('Unload a failed: not connected to llamaherd');
    expect(result).toHaveClass('MuiAlert-colorError');
  });

  it('holds a row while its action waits, and every row while disconnected', () => {
    const { rerender, onLoad, onUnload } = renderTable({ pending: { b: 'load' } });
    expect(row('b').getByTestId('btn-load')).toBeDisabled();
    expect(row('b').getByTestId('btn-load').querySelector('[role="progressbar"]')).not.toBeNull();
    expect(row('a').getByTestId('btn-unload')).toBeEnabled();

    rerender(<ModelsTable models={TWO_MODELS.map((m) => live(m))} onLoad={onLoad} onUnload={onUnload} connected={false} />);
    for (const r of screen.getAllByTestId('gw-model-row')) {
      expect(within(r).getByTestId('btn-load')).toBeDisabled();
      expect(within(r).getByTestId('btn-unload')).toBeDisabled();
    }
  });

  it('shows a placeholder until the first list, and says when there is none', () => {
    const { rerender, onLoad, onUnload } = renderTable({ models: [], isLoading: true });
    expect(screen.getByTestId('models-loading')).toBeInTheDocument();
    rerender(<ModelsTable models={[]} onLoad={onLoad} onUnload={onUnload} />);
    expect(screen.getByTestId('gw-no-models')).toHaveTextContent('No models configured.');
  });

  it('shows each model\'s live speed, slots and memory, and dashes until they come', () => {
    const { rerender, onLoad, onUnload } = renderTable();
    for (const id of ['a', 'b']) {
      expect(row(id).getByTestId('gw-tps')).toHaveTextContent(/^—$/);
      expect(row(id).getByTestId('gw-slots')).toHaveTextContent(/^—$/);
      expect(row(id).getByTestId('gw-memory')).toHaveTextContent(/^—$/);
    }
    const metrics = {
      a: modelMetrics({ tokensPerSecond: 57.25, slotsBusy: 1, slotsTotal: 4 }),
      b: modelMetrics({
        id: 'b',
        tokensPerSecond: null,
        slotsBusy: null,
        slotsTotal: null,
        memory: { rssBytes: 4 * 1073741824, vramBytes: 3 * 1073741824, cpuPercent: null },
      }),
    };
    rerender(<ModelsTable models={TWO_MODELS.map((m) => live(m))} onLoad={onLoad} onUnload={onUnload} metrics={metrics} />);
    expect(row('a').getByTestId('gw-tps')).toHaveTextContent(/^57\.3 tok\/s$/);
    expect(row('a').getByTestId('gw-slots')).toHaveTextContent(/^1\/4$/);
    expect(row('a').getByTestId('gw-memory')).toHaveTextContent(/^20\.0 MiB$/);
    expect(row('a').queryByTestId('gw-vram')).not.toBeInTheDocument();
    expect(row('b').getByTestId('gw-tps')).toHaveTextContent(/^—$/);
    expect(row('b').getByTestId('gw-memory')).toHaveTextContent(/^4\.0 GiBVRAM 3\.0 GiB$/);
    expect(row('b').getByTestId('gw-vram')).toHaveTextContent(/^VRAM 3\.0 GiB$/);
    // On a phone the speed moves under the model's name.
    expect(row('a').getByText(/0 in flight · 0 queued · used .* · 57\.3 tok\/s$/)).toBeInTheDocument();
  });
});


describe('ModelsTable: choosing a model', () => {
  it("links each model's name to its status and logs, and marks the one shown", () => {
    renderTable({ selected: 'b', linkTo: (id) => `#/status/${id}` });
    expect(row('a').getByTestId('gw-model-link')).toHaveAttribute('href', '#/status/a');
    expect(row('b').getByTestId('gw-model-link')).toHaveAttribute('href', '#/status/b');
    const rows = screen.getAllByTestId('gw-model-row');
    expect(rows.map((r) => r.getAttribute('aria-selected'))).toEqual(['false', 'true']);
    expect(rows[1]).toHaveClass('Mui-selected');
  });

  it('shows plain names without a way to choose', () => {
    renderTable();
    expect(screen.queryByTestId('gw-model-link')).not.toBeInTheDocument();
    expect(screen.getAllByTestId('gw-model-row')[0]).not.toHaveAttribute('aria-selected');
  });
});
