import { act, fireEvent, render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { jsonResponse, statusData } from '../../test/fixtures';
import type { LlamaServiceStatus } from '../../types/llama';
import { LlamaControls, type LlamaControlsProps } from './LlamaControls';

/** A fetch whose answer the test releases when it wants. */
function deferredFetch() {
  let release: (r: Response) => void = () => {};
  const fetchImpl = vi.fn(
    (_url: string, _init?: RequestInit) =>
      new Promise<Response>((resolve) => {
        release = resolve;
      }),
  );
  return { fetchImpl, release: (r: Response) => release(r) };
}

const buttons = () => ['btn-start', 'btn-stop', 'btn-restart'].map((id) => screen.getByTestId(id));

/** Which buttons are enabled, as the table in lib/status.ts writes them. */
const enabled = () => {
  const [start, stop, restart] = buttons().map((b) => !(b as HTMLButtonElement).disabled);
  return { start, stop, restart };
};

// `error` is the state where every action makes sense.
function renderControls(props: Partial<LlamaControlsProps> = {}) {
  return render(<LlamaControls status="error" {...props} />);
}

describe('LlamaControls', () => {
  it('asks for confirmation before stopping; cancel sends nothing', async () => {
    const user = userEvent.setup();
    const fetchImpl = vi.fn();
    renderControls({ fetchImpl });

    await user.click(screen.getByTestId('btn-stop'));
    expect(await screen.findByRole('dialog')).toHaveTextContent('Stop llama-server?');
    expect(fetchImpl).not.toHaveBeenCalled();

    await user.click(screen.getByTestId('cancel-stop'));
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument());
    expect(fetchImpl).not.toHaveBeenCalled();
  });

  it('stops after confirmation and reports the result', async () => {
    const user = userEvent.setup();
    const onDone = vi.fn();
    const fetchImpl = vi.fn(async () => jsonResponse({ status: statusData({ status: 'initial' }) }));
    renderControls({ fetchImpl, onDone });

    await user.click(screen.getByTestId('btn-stop'));
    await user.click(await screen.findByTestId('confirm-stop'));

    expect(fetchImpl).toHaveBeenCalledTimes(1);
    expect(fetchImpl).toHaveBeenCalledWith('/api/llama/stop', expect.objectContaining({ method: 'POST' }));
    expect(await screen.findByTestId('action-result')).toHaveTextContent('Stopped — llama-server is initial');
    expect(onDone).toHaveBeenCalledWith('stop', expect.objectContaining({ status: 'initial' }));
    expect(screen.queryByRole('dialog')).not.toBeInTheDocument();
  });

  it.each([
    ['btn-start', '/api/llama/start'],
    ['btn-restart', '/api/llama/restart'],
  ])('%s posts to %s without confirmation', async (testId, url) => {
    const user = userEvent.setup();
    const onDone = vi.fn();
    const fetchImpl = vi.fn(async () => jsonResponse({ status: statusData({ status: 'initial' }) }));
    renderControls({ fetchImpl, onDone });
    await user.click(screen.getByTestId(testId));
    expect(fetchImpl).toHaveBeenCalledWith(url, expect.objectContaining({ method: 'POST' }));
    expect(screen.queryByRole('dialog')).not.toBeInTheDocument();
    // The answer's state is only a moment old: it is not presented as the outcome.
    const result = await screen.findByTestId('action-result');
    expect(result).toHaveTextContent(/^(Start|Restart) requested$/);
    expect(onDone).toHaveBeenCalledTimes(1);
  });

  it('disables every button while an action runs', async () => {
    const user = userEvent.setup();
    const { fetchImpl, release } = deferredFetch();
    renderControls({ fetchImpl });

    buttons().forEach((b) => expect(b).toBeEnabled());
    await user.click(screen.getByTestId('btn-restart'));
    buttons().forEach((b) => expect(b).toBeDisabled());
    expect(screen.getByTestId('btn-restart').querySelector('[role="progressbar"]')).not.toBeNull();

    // Clicks do nothing while pending (MUI also sets pointer-events: none, so fire directly).
    fireEvent.click(screen.getByTestId('btn-start'));
    fireEvent.click(screen.getByTestId('btn-stop'));
    expect(screen.queryByRole('dialog')).not.toBeInTheDocument();
    expect(fetchImpl).toHaveBeenCalledTimes(1);

    await act(async () => release(jsonResponse({ status: statusData() })));
    await waitFor(() => buttons().forEach((b) => expect(b).toBeEnabled()));
    expect(screen.getByTestId('action-result')).toHaveTextContent('Restart requested');
  });

  it.each<[LlamaServiceStatus | null, { start: boolean; stop: boolean; restart: boolean }]>([
    ['ready', { start: false, stop: true, restart: true }],
    ['initial', { start: true, stop: false, restart: false }],
    ['stopping', { start: false, stop: false, restart: false }],
    [null, { start: false, stop: false, restart: false }],
  ])('in %s enables only what makes sense', (status, expected) => {
    renderControls({ status });
    expect(enabled()).toEqual(expected);
  });

  it('follows the live state, and keeps all disabled while an action runs', async () => {
    const user = userEvent.setup();
    const { fetchImpl, release } = deferredFetch();
    const { rerender } = render(<LlamaControls status="initial" fetchImpl={fetchImpl} />);
    await user.click(screen.getByTestId('btn-start'));
    // The state moves on while the request is still in flight: still nothing to click.
    rerender(<LlamaControls status="ready" fetchImpl={fetchImpl} />);
    expect(enabled()).toEqual({ start: false, stop: false, restart: false });

    await act(async () => release(jsonResponse({ status: statusData() })));
    await waitFor(() => expect(enabled()).toEqual({ start: false, stop: true, restart: true }));
  });

  it('will not confirm a stop once the state no longer allows one', async () => {
    const user = userEvent.setup();
    const fetchImpl = vi.fn();
    const { rerender } = render(<LlamaControls status="ready" fetchImpl={fetchImpl} />);
    await user.click(screen.getByTestId('btn-stop'));
    expect(await screen.findByTestId('confirm-stop')).toBeEnabled();
    rerender(<LlamaControls status="stopping" fetchImpl={fetchImpl} />);
    expect(screen.getByTestId('confirm-stop')).toBeDisabled();
    fireEvent.click(screen.getByTestId('confirm-stop'));
    expect(fetchImpl).not.toHaveBeenCalled();
  });

  it('shows a 409 as an error', async () => {
    const user = userEvent.setup();
    const fetchImpl = vi.fn(async () =>
      jsonResponse({ error: { message: 'a restart is already in progress', type: 'conflict' } }, 409),
    );
    renderControls({ fetchImpl });
    await user.click(screen.getByTestId('btn-start'));
    const result = await screen.findByTestId('action-result');
    expect(result).toHaveTextContent('Start failed: another action is running — a restart is already in progress');
    expect(result).toHaveClass('MuiAlert-colorError');
    expect(screen.getByTestId('btn-start')).toBeEnabled();
  });

  it('shows other HTTP and network errors', async () => {
    const user = userEvent.setup();
    const fetchImpl = vi
      .fn()
      .mockResolvedValueOnce(jsonResponse({ error: { message: 'llama-server binary not found', type: 'config' } }, 500))
      .mockRejectedValueOnce(new TypeError('Failed to fetch'));
    renderControls({ fetchImpl });

    await user.click(screen.getByTestId('btn-restart'));
    expect(await screen.findByTestId('action-result')).toHaveTextContent(
      'Restart failed (HTTP 500): llama-server binary not found',
    );
    await user.click(screen.getByTestId('btn-start'));
    await waitFor(() =>
      expect(screen.getByTestId('action-result')).toHaveTextContent(
        'Start failed: Cannot reach llamaherd: Failed to fetch',
      ),
    );
  });

  it('uses the global fetch by default', async () => {
    const user = userEvent.setup();
    const fetchMock = vi.fn(async () => jsonResponse({ status: statusData() }));
    vi.stubGlobal('fetch', fetchMock);
    renderControls();
    await user.click(screen.getByTestId('btn-start'));
    expect(fetchMock).toHaveBeenCalledWith('/api/llama/start', expect.objectContaining({ method: 'POST' }));
    expect(await screen.findByTestId('action-result')).toHaveTextContent('Start requested');
  });
});

describe("LlamaControls of a model", () => {
  it("acts on that model's routes and says so", async () => {
    const user = userEvent.setup();
    const fetchImpl = vi.fn(async () => jsonResponse({ status: { ...statusData({ status: 'initial' }), model: 'beta' } }));
    renderControls({ fetchImpl, model: 'beta' });

    await user.click(screen.getByTestId('btn-restart'));
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/beta/restart', expect.objectContaining({ method: 'POST' }));
    expect(await screen.findByTestId('action-result')).toHaveTextContent('Restart requested: beta');

    await user.click(screen.getByTestId('btn-stop'));
    expect(await screen.findByRole('dialog')).toHaveTextContent('Stop beta?');
    await user.click(screen.getByTestId('confirm-stop'));
    expect(fetchImpl).toHaveBeenLastCalledWith('/api/models/beta/stop', expect.objectContaining({ method: 'POST' }));
    await waitFor(() => expect(screen.getByTestId('action-result')).toHaveTextContent('Stopped — beta is initial'));
  });
});
