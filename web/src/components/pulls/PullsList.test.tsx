import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { ApiError } from '../../api/client';
import { pullFixture } from '../../test/fixtures';
import { PullsList } from './PullsList';

const MiB = 1024 * 1024;
const rowOf = (source: string) => screen.getByRole('listitem', { name: `Pull of ${source}` });

describe('PullsList', () => {
  it('shows nothing without pulls', () => {
    const { container } = render(<PullsList pulls={[]} onCancel={vi.fn()} />);
    expect(container).toBeEmptyDOMElement();
  });

  it('shows each download with its progress, several at once', () => {
    const pulls = [
      pullFixture(),
      pullFixture({ id: 'p2', source: 'acme/big-GGUF:Q8_0', bytes: 5 * MiB, total: 0 }),
    ];
    render(<PullsList pulls={pulls} onCancel={vi.fn()} />);
    expect(screen.getAllByRole('listitem')).toHaveLength(2);

    const bar = within(rowOf('acme/tiny-GGUF:Q4_K_M')).getByRole('progressbar', { name: 'Download of acme/tiny-GGUF:Q4_K_M' });
    expect(bar).toHaveAttribute('aria-valuenow', '25');
    expect(bar).toHaveAttribute('aria-valuetext', '12.0 MiB of 48.0 MiB (25%)');
    expect(rowOf('acme/tiny-GGUF:Q4_K_M')).toHaveTextContent('downloading');
    // Its size not known yet: a moving bar, and the bytes so far.
    const unknown = within(rowOf('acme/big-GGUF:Q8_0')).getByRole('progressbar');
    expect(unknown).not.toHaveAttribute('aria-valuenow');
    expect(rowOf('acme/big-GGUF:Q8_0')).toHaveTextContent('5.0 MiB');
  });

  it('cancels a download, and says so when llamaherd refuses', async () => {
    const user = userEvent.setup();
    const onCancel = vi
      .fn<(id: string) => Promise<unknown>>()
      .mockRejectedValueOnce(new ApiError('no such pull', 404, 'not_found'))
      .mockResolvedValueOnce({});
    render(<PullsList pulls={[pullFixture()]} onCancel={onCancel} />);
    const cancel = screen.getByRole('button', { name: 'Cancel pull of acme/tiny-GGUF:Q4_K_M' });

    await user.click(cancel);
    expect(onCancel).toHaveBeenCalledWith('p1');
    expect(await screen.findByRole('alert')).toHaveTextContent('Cancel failed: no such pull');
    await user.click(cancel);
    await waitFor(() => expect(screen.queryByRole('alert')).not.toBeInTheDocument());
  });

  it('shows how each pull ended: the model it serves, the reason it failed; no Cancel', () => {
    const pulls = [
      pullFixture({ state: 'done', bytes: 48 * MiB }),
      pullFixture({ id: 'p2', source: 'acme/gated-GGUF:Q4_0', state: 'failed', error: 'the checksum of tiny.gguf does not match' }),
      pullFixture({ id: 'p3', source: 'acme/other-GGUF:Q4_0', state: 'cancelled' }),
    ];
    render(<PullsList pulls={pulls} onCancel={vi.fn()} />);
    expect(rowOf('acme/tiny-GGUF:Q4_K_M')).toHaveTextContent('served as tiny-Q4_K_M');
    expect(rowOf('acme/gated-GGUF:Q4_0')).toHaveTextContent('the checksum of tiny.gguf does not match');
    expect(rowOf('acme/other-GGUF:Q4_0')).toHaveTextContent('cancelled');
    expect(screen.queryByRole('button', { name: /^Cancel pull/ })).not.toBeInTheDocument();
    expect(screen.queryByRole('progressbar')).not.toBeInTheDocument();
  });

  it('dismisses a finished pull from the page', async () => {
    const user = userEvent.setup();
    render(<PullsList pulls={[pullFixture({ state: 'done' }), pullFixture({ id: 'p2', source: 'acme/big-GGUF:Q8_0' })]} onCancel={vi.fn()} />);
    expect(screen.queryByRole('button', { name: 'Dismiss pull of acme/big-GGUF:Q8_0' })).not.toBeInTheDocument();
    await user.click(screen.getByRole('button', { name: 'Dismiss pull of acme/tiny-GGUF:Q4_K_M' }));
    expect(screen.getAllByRole('listitem')).toHaveLength(1);
  });

  it('says why the downloads could not be listed', () => {
    render(<PullsList pulls={[]} onCancel={vi.fn()} error="disk on fire" />);
    expect(screen.getByRole('status')).toHaveTextContent('The downloads could not be listed: disk on fire');
  });
});
