import { render, screen, waitFor, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { ApiError, type Removal } from '../../api/client';
import type { LiveModel } from '../../hooks/useLlamaModels';
import { TWO_MODELS } from '../../test/fixtures';
import { ModelsTable } from '../ui/ModelsTable';

const models: LiveModel[] = TWO_MODELS.map((m) => ({ ...m, lastUsedLocal: null, receivedAt: 0, loadRequested: false }));

function renderTable(onRemove: (id: string) => Promise<Removal>) {
  const user = userEvent.setup();
  const noop = vi.fn(async () => ({ ok: false as const, error: 'unused' }));
  render(<ModelsTable models={models} onLoad={noop} onUnload={noop} removable={new Set(['b'])} onRemove={onRemove} />);
  return user;
}

describe('Remove a pulled model', () => {
  it('is offered for pulled models only, and asks first; Cancel removes nothing', async () => {
    const onRemove = vi.fn(async (): Promise<Removal> => ({ files: ['b.gguf'], reloadError: null }));
    const user = renderTable(onRemove);
    expect(screen.queryByRole('button', { name: 'Remove a' })).not.toBeInTheDocument();

    await user.click(screen.getByRole('button', { name: 'Remove b' }));
    const dialog = await screen.findByRole('dialog', { name: 'Remove b?' });
    await user.click(within(dialog).getByRole('button', { name: 'Cancel' }));
    await waitFor(() => expect(dialog).not.toBeInTheDocument());
    expect(onRemove).not.toHaveBeenCalled();
  });

  it('removes after the confirmation and says so', async () => {
    const onRemove = vi.fn(async (): Promise<Removal> => ({ files: ['b.gguf'], reloadError: null }));
    const user = renderTable(onRemove);
    await user.click(screen.getByRole('button', { name: 'Remove b' }));
    const dialog = await screen.findByRole('dialog', { name: 'Remove b?' });
    await user.click(within(dialog).getByRole('button', { name: 'Remove' }));

    expect(onRemove).toHaveBeenCalledWith('b');
    await waitFor(() => expect(dialog).not.toBeInTheDocument());
    expect(await screen.findByTestId('model-action-result')).toHaveTextContent('Removed b');
  });

  it("shows llamaherd's refusal (a loaded model) in the dialog", async () => {
    const message = "b is loaded: unload it before removing it";
    const onRemove = vi.fn(async (): Promise<Removal> => {
      throw new ApiError(message, 409, 'invalid_request_error', 'model_loaded');
    });
    const user = renderTable(onRemove);
    await user.click(screen.getByRole('button', { name: 'Remove b' }));
    const dialog = await screen.findByRole('dialog', { name: 'Remove b?' });
    await user.click(within(dialog).getByRole('button', { name: 'Remove' }));

    expect(await within(dialog).findByRole('alert')).toHaveTextContent(message);
    expect(dialog).toBeInTheDocument();
  });

  it('says so when the files are gone but the reload after it failed', async () => {
    const onRemove = vi.fn(async (): Promise<Removal> => ({ files: ['b.gguf'], reloadError: 'the config is not JSON' }));
    const user = renderTable(onRemove);
    await user.click(screen.getByRole('button', { name: 'Remove b' }));
    await user.click(within(await screen.findByRole('dialog', { name: 'Remove b?' })).getByRole('button', { name: 'Remove' }));
    expect(await screen.findByTestId('model-action-result')).toHaveTextContent(
      'Removed the files of b, but the reload that follows failed: the config is not JSON',
    );
  });
});
