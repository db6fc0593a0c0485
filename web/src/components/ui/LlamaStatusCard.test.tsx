import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { MODELS, SIGKILL_CRASH, SIGKILL_CRASH_OLD_SERVER } from '../../test/fixtures';
import type { LlamaServiceStatus } from '../../types/llama';
import { LlamaStatusCard, type LlamaStatusCardProps } from './LlamaStatusCard';

function renderCard(overrides: Partial<LlamaStatusCardProps> = {}) {
  const props: LlamaStatusCardProps = {
    status: 'ready',
    models: MODELS,
    lastError: null,
    retries: 0,
    uptime: 3723,
    startedAt: '2025-12-26T10:00:00Z',
    ...overrides,
  };
  return render(<LlamaStatusCard {...props} />);
}

const BUSY: LlamaServiceStatus[] = ['checking', 'starting'];
const ALL: LlamaServiceStatus[] = ['initial', 'checking', 'starting', 'ready', 'crashed', 'stopping', 'error'];

const CHIP_COLOR: Record<LlamaServiceStatus, string> = {
  initial: 'MuiChip-colorDefault',
  checking: 'MuiChip-colorInfo',
  starting: 'MuiChip-colorInfo',
  ready: 'MuiChip-colorSuccess',
  crashed: 'MuiChip-colorWarning',
  stopping: 'MuiChip-colorDefault',
  error: 'MuiChip-colorError',
};

describe('LlamaStatusCard', () => {
  it.each(ALL)('shows the badge for %s with its colour', (status) => {
    renderCard({ status, lastError: status === 'crashed' || status === 'error' ? 'boom' : null });
    const badge = screen.getByTestId('status-badge');
    expect(badge).toHaveTextContent(new RegExp(`^${status}$`));
    expect(badge).toHaveClass(CHIP_COLOR[status]);
  });

  it.each(ALL)('shows a spinner for %s only while checking or starting', (status) => {
    renderCard({ status });
    if (BUSY.includes(status)) {
      expect(screen.getByTestId('status-spinner')).toBeInTheDocument();
      expect(screen.getByRole('progressbar')).toBeInTheDocument();
    } else {
      expect(screen.queryByTestId('status-spinner')).not.toBeInTheDocument();
    }
  });

  it('ready: uptime, model count, models with sizes and types, no error', () => {
    renderCard({ status: 'ready', pid: 1234 });
    expect(screen.getByTestId('uptime')).toHaveTextContent('1h 02m 03s');
    expect(screen.getByTestId('model-count')).toHaveTextContent('2');
    const rows = screen.getAllByTestId('model-row');
    expect(rows).toHaveLength(2);
    expect(rows[0]).toHaveTextContent('llama-3.2-3b-instruct');
    expect(rows[0]).toHaveTextContent('4.0 GiB');
    expect(rows[0]).toHaveTextContent('llama');
    expect(rows[1]).toHaveTextContent('tiny');
    expect(rows[1]).toHaveTextContent('512.0 KiB');
    expect(within(rows[1]!).getByTestId('model-type')).toHaveTextContent('qwen2');
    expect(screen.getByTestId('pid')).toHaveTextContent('1234');
    expect(screen.queryByTestId('error-message')).not.toBeInTheDocument();
    expect(screen.queryByTestId('retry-count')).not.toBeInTheDocument();
    expect(screen.queryByTestId('adopted-note')).not.toBeInTheDocument();
  });

  it.each<[LlamaServiceStatus, string]>([
    ['crashed', 'MuiAlert-colorWarning'],
    ['error', 'MuiAlert-colorError'],
  ])('%s: the error and "retry 3/5"', (status, alertClass) => {
    renderCard({ status, lastError: 'llama-server exited with code 1', retries: 3, models: [], uptime: 0, startedAt: null });
    const message = screen.getByTestId('error-message');
    expect(message).toHaveTextContent('llama-server exited with code 1');
    expect(screen.getByTestId('retry-count')).toHaveTextContent('retry 3/5');
    expect(message.closest('.MuiAlert-root')).toHaveClass(alertClass);
    expect(screen.getByTestId('uptime')).toHaveTextContent('—');
    expect(screen.getByTestId('model-count')).toHaveTextContent('0');
    expect(screen.getByTestId('no-models')).toBeInTheDocument();
  });

  it('shows how it exited and the restart count when sent', () => {
    renderCard({
      status: 'crashed',
      lastError: 'boom',
      retries: 1,
      restarts: 4,
      lastExit: { code: null, signal: 'SIGSEGV' },
    });
    expect(screen.getByTestId('last-exit')).toHaveTextContent('killed by SIGSEGV');
    expect(screen.getByTestId('restarts')).toHaveTextContent('4');
  });

  it("after kill -9: the reason as the message, the server's last lines folded away", async () => {
    const user = userEvent.setup();
    renderCard(SIGKILL_CRASH);
    expect(screen.getByTestId('error-message')).toHaveTextContent(/^llama-server was killed by SIGKILL unexpectedly$/);
    expect(screen.getByTestId('last-exit')).toHaveTextContent('killed by SIGKILL');

    const toggle = screen.getByTestId('last-output-toggle');
    expect(toggle).toHaveTextContent('Last output (3 lines)');
    expect(toggle).toHaveAttribute('aria-expanded', 'false');
    expect(screen.queryByTestId('last-output')).not.toBeInTheDocument();

    await user.click(toggle);
    expect(toggle).toHaveAttribute('aria-expanded', 'true');
    const output = screen.getByTestId('last-output');
    expect(output.tagName).toBe('PRE');
    expect(toggle).toHaveAttribute('aria-controls', output.id);
    expect(output).toHaveStyle({ fontFamily: 'monospace' });
    expect(output.textContent).toBe(SIGKILL_CRASH.lastExit?.lines?.join('\n'));

    await user.click(toggle);
    expect(toggle).toHaveAttribute('aria-expanded', 'false');
    await waitFor(() => expect(screen.queryByTestId('last-output')).not.toBeInTheDocument());
  });

  it('shows the last lines in error too, and keeps them under "Last error" while starting again', () => {
    const lines = ['llama_model_load: error loading model: invalid magic characters'];
    const lastExit = { code: 1, signal: null, lines };
    const { unmount } = renderCard({ status: 'error', lastError: 'llama-server exited with code 1', lastExit, retries: 5 });
    expect(screen.getByTestId('last-output-toggle')).toHaveTextContent('Last output (1 line)');
    unmount();
    renderCard({ status: 'starting', lastError: 'llama-server exited with code 1', lastExit, retries: 2 });
    expect(screen.getByTestId('last-output-toggle')).toBeInTheDocument();
  });

  it('an older server without lines: its message as sent, and no output block', () => {
    renderCard(SIGKILL_CRASH_OLD_SERVER);
    expect(screen.getByTestId('error-message').textContent).toBe(SIGKILL_CRASH_OLD_SERVER.lastError);
    expect(screen.getByTestId('last-exit')).toHaveTextContent('killed by SIGKILL');
    expect(screen.queryByTestId('last-output-toggle')).not.toBeInTheDocument();
  });

  it('no output block once ready again', () => {
    renderCard({ status: 'ready', lastError: null, lastExit: SIGKILL_CRASH.lastExit ?? null });
    expect(screen.queryByTestId('last-output-toggle')).not.toBeInTheDocument();
  });

  it('uses maxRetries from the server when sent', () => {
    renderCard({ status: 'crashed', lastError: 'boom', retries: 2, maxRetries: 10 });
    expect(screen.getByTestId('retry-count')).toHaveTextContent('retry 2/10');
  });

  it('crashed without a message still says so', () => {
    renderCard({ status: 'crashed', lastError: null, retries: 1 });
    expect(screen.getByTestId('error-message')).toHaveTextContent('llama-server exited.');
    expect(screen.getByTestId('retry-count')).toHaveTextContent('retry 1/5');
  });

  it('starting after a crash shows the last error and the retry count', () => {
    renderCard({ status: 'starting', lastError: 'exit code 1', retries: 2, models: [] });
    expect(screen.getByTestId('error-message')).toHaveTextContent('Last error: exit code 1');
    expect(screen.getByTestId('retry-count')).toHaveTextContent('retry 2/5');
  });

  it.each<LlamaServiceStatus>(['initial', 'checking', 'starting', 'stopping'])(
    '%s: no error, no uptime',
    (status) => {
      renderCard({ status, models: [], uptime: 0, startedAt: null });
      expect(screen.queryByTestId('error-message')).not.toBeInTheDocument();
      expect(screen.getByTestId('uptime')).toHaveTextContent('—');
      expect(screen.queryAllByTestId('model-row')).toHaveLength(0);
    },
  );

  it('notes an adopted server', () => {
    renderCard({ adopted: true });
    expect(screen.getByTestId('adopted-note')).toHaveTextContent(/already running/);
  });

  it('shows skeletons and no badge while loading', () => {
    renderCard({ isLoading: true });
    expect(screen.queryByTestId('status-badge')).not.toBeInTheDocument();
    expect(screen.getByTestId('status-loading')).toBeInTheDocument();
    expect(screen.queryAllByTestId('model-row')).toHaveLength(0);
  });

  it('shows an unknown status verbatim', () => {
    renderCard({ status: 'hibernating' as LlamaServiceStatus });
    expect(screen.getByTestId('status-badge')).toHaveTextContent(/^hibernating$/);
  });
});

describe('LlamaStatusCard of a model', () => {
  it('says which model it shows, and whether it is the primary', () => {
    const { rerender } = renderCard({ model: 'beta' });
    expect(screen.getByTestId('status-model')).toHaveTextContent('beta');
    expect(screen.getByTestId('status-card')).toHaveAttribute('data-model', 'beta');
    expect(screen.getByTestId('status-card')).not.toHaveTextContent('primary');
    rerender(<LlamaStatusCard status="ready" models={[]} lastError={null} retries={0} uptime={0} model="alpha" primary />);
    expect(screen.getByTestId('status-card')).toHaveTextContent('Model alpha · primary');
  });

  it('names none while it does not know the model', () => {
    renderCard();
    expect(screen.queryByTestId('status-model')).not.toBeInTheDocument();
  });
});
