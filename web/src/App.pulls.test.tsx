import { act, render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import App from './App';
import { FakeSocket } from './test/fakeSocket';
import { gatewayModel, jsonResponse, modelsEvent, pullFixture, statusEvent } from './test/fixtures';
import type { Pull } from './types/pulls';

const MiB = 1024 * 1024;
const NOT_FOUND = () => jsonResponse({ error: { message: 'not found', type: 'not_found' } }, 404);

/** A llamaherd that pulls (or, with `pulls` null, one without the route). */
function fakeServer(pulls: Pull[] | null) {
  const socket = new FakeSocket();
  const fetchImpl = vi.fn(async (url: string, init?: RequestInit) => {
    if (url === '/healthz') return jsonResponse({ status: 'ok', name: 'llamaherd', version: '0.1.0' });
    if (url.startsWith('/api/llama/logs')) return jsonResponse({ lines: [] });
    if (pulls === null) return NOT_FOUND();
    if (url === '/api/models/pulls') return jsonResponse({ pulls });
    if (url === '/api/models/pull' && init?.method === 'POST') return jsonResponse(pullFixture({ bytes: 0 }), 202);
    if (url === '/api/models/tiny-Q4_K_M' && init?.method === 'DELETE') return new Response(null, { status: 204 });
    return NOT_FOUND();
  });
  render(<App socketFactory={() => socket} fetchImpl={fetchImpl} />);
  act(() => {
    socket.serverConnect();
    socket.serverEmit('llamaStatus', statusEvent());
    socket.serverEmit('llamaModels', modelsEvent());
  });
  return { socket, fetchImpl };
}

const modelsPanel = () => within(screen.getByTestId('models-card'));

describe('App: models from Hugging Face', () => {
  it("shows a llamaherd's refusal of a pull in the dialog", async () => {
    const user = userEvent.setup();
    fakeServer(null);
    await user.click(await modelsPanel().findByRole('button', { name: 'Add model' }));
    await user.click(screen.getByRole('textbox', { name: /Repository/ }));
    await user.paste('acme/tiny-GGUF');
    await user.click(screen.getByRole('button', { name: 'Pull' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('not found');
  });

  it('pulls a model, follows its progress live, and removes it once it is served', async () => {
    const user = userEvent.setup();
    const { socket, fetchImpl } = fakeServer([]);
    await user.click(await modelsPanel().findByRole('button', { name: 'Add model' }));
    await user.click(screen.getByRole('textbox', { name: /Repository/ }));
    await user.paste('acme/tiny-GGUF');
    await user.click(screen.getByRole('textbox', { name: 'Quantisation or file' }));
    await user.paste('Q4_K_M');
    await user.click(screen.getByRole('button', { name: 'Pull' }));

    const row = await modelsPanel().findByRole('listitem', { name: 'Pull of acme/tiny-GGUF:Q4_K_M' });
    act(() => socket.serverEmit('modelPull', pullFixture({ bytes: 24 * MiB })));
    expect(within(row).getByRole('progressbar')).toHaveAttribute('aria-valuenow', '50');
    expect(row).toHaveTextContent('24.0 MiB of 48.0 MiB (50%)');

    // Done: the model comes with the usual llamaModels, and may be removed.
    act(() => {
      socket.serverEmit('modelPull', pullFixture({ state: 'done', bytes: 48 * MiB }));
      socket.serverEmit('llamaModels', modelsEvent([gatewayModel(), gatewayModel({ id: 'tiny-Q4_K_M', default: false })]));
    });
    expect(row).toHaveTextContent('served as tiny-Q4_K_M');
    expect(modelsPanel().queryByRole('button', { name: 'Remove a' })).not.toBeInTheDocument();
    await user.click(modelsPanel().getByRole('button', { name: 'Remove tiny-Q4_K_M' }));
    await user.click(within(await screen.findByRole('dialog', { name: 'Remove tiny-Q4_K_M?' })).getByRole('button', { name: 'Remove' }));
    expect(await screen.findByTestId('model-action-result')).toHaveTextContent('Removed tiny-Q4_K_M');
    expect(fetchImpl).toHaveBeenCalledWith('/api/models/tiny-Q4_K_M', expect.objectContaining({ method: 'DELETE' }));
  }, 15_000); // the whole flow, through the app, on a machine that may be busy
});
