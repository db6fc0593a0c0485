import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { ApiError } from '../../api/client';
import { AddModelButton } from './AddModelButton';

function renderButton(onPull: (source: string) => Promise<unknown>) {
  const user = userEvent.setup();
  render(<AddModelButton onPull={onPull} />);
  return user;
}

describe('Add model', () => {
  it('pulls a repository with a quantisation and closes once llamaherd took it', async () => {
    const onPull = vi.fn(async () => ({}));
    const user = renderButton(onPull);

    await user.click(screen.getByRole('button', { name: 'Add model' }));
    const dialog = await screen.findByRole('dialog', { name: 'Add a model from Hugging Face' });
    await user.click(screen.getByRole('textbox', { name: /Repository/ }));
    await user.paste('acme/tiny-GGUF');
    await user.click(screen.getByRole('textbox', { name: 'Quantisation or file' }));
    await user.paste('Q4_K_M');
    await user.click(screen.getByRole('button', { name: 'Pull' }));

    expect(onPull).toHaveBeenCalledWith('acme/tiny-GGUF:Q4_K_M');
    await waitFor(() => expect(dialog).not.toBeInTheDocument());
  });

  it('sends a file name as a path in the repository', async () => {
    const onPull = vi.fn(async () => ({}));
    const user = renderButton(onPull);
    await user.click(screen.getByRole('button', { name: 'Add model' }));
    await user.click(screen.getByRole('textbox', { name: /Repository/ }));
    await user.paste('acme/tiny-GGUF');
    await user.click(screen.getByRole('textbox', { name: 'Quantisation or file' }));
    await user.paste('tiny-Q8_0.gguf');
    await user.keyboard('{Enter}');
    expect(onPull).toHaveBeenCalledWith('acme/tiny-GGUF/tiny-Q8_0.gguf');
  });

  it("shows llamaherd's refusal in the dialog and lets the user try again", async () => {
    const message = "'Q4' matches several files in acme/tiny-GGUF: tiny-Q4_0.gguf, tiny-Q4_K_M.gguf; name one";
    const onPull = vi
      .fn<(source: string) => Promise<unknown>>()
      .mockRejectedValueOnce(new ApiError(message, 409, 'invalid_request_error', 'ambiguous_quant'))
      .mockResolvedValueOnce({});
    const user = renderButton(onPull);
    await user.click(screen.getByRole('button', { name: 'Add model' }));
    const dialog = await screen.findByRole('dialog');
    await user.click(screen.getByRole('textbox', { name: /Repository/ }));
    await user.paste('acme/tiny-GGUF');
    const choice = screen.getByRole('textbox', { name: 'Quantisation or file' });
    await user.type(choice, 'Q4');
    await user.click(screen.getByRole('button', { name: 'Pull' }));

    expect(await screen.findByRole('alert')).toHaveTextContent(message);
    expect(dialog).toBeInTheDocument();

    await user.clear(choice);
    await user.type(choice, 'Q4_K_M');
    await user.click(screen.getByRole('button', { name: 'Pull' }));
    expect(onPull).toHaveBeenLastCalledWith('acme/tiny-GGUF:Q4_K_M');
    await waitFor(() => expect(dialog).not.toBeInTheDocument());
  });

  it('says what is wrong with a repository name before asking llamaherd', async () => {
    const onPull = vi.fn(async () => ({}));
    const user = renderButton(onPull);
    await user.click(screen.getByRole('button', { name: 'Add model' }));
    expect(screen.getByRole('button', { name: 'Pull' })).toBeDisabled();
    await user.click(screen.getByRole('textbox', { name: /Repository/ }));
    await user.paste('tiny');
    await user.click(screen.getByRole('button', { name: 'Pull' }));
    expect(await screen.findByRole('alert')).toHaveTextContent('“tiny” is not a repository: write it as owner/name.');
    expect(onPull).not.toHaveBeenCalled();
  });

  it('is disabled while the pull is being asked for, and opens empty again', async () => {
    let accept: (v: unknown) => void = () => {};
    const onPull = vi.fn(() => new Promise((resolve) => (accept = resolve)));
    const user = renderButton(onPull);
    await user.click(screen.getByRole('button', { name: 'Add model' }));
    await user.click(screen.getByRole('textbox', { name: /Repository/ }));
    await user.paste('acme/tiny-GGUF');
    await user.click(screen.getByRole('button', { name: 'Pull' }));
    expect(screen.getByRole('button', { name: 'Pull' })).toBeDisabled();
    expect(screen.getByRole('textbox', { name: /Repository/ })).toBeDisabled();
    accept({});
    await waitFor(() => expect(screen.queryByRole('dialog')).not.toBeInTheDocument());

    await user.click(screen.getByRole('button', { name: 'Add model' }));
    expect(await screen.findByRole('textbox', { name: /Repository/ })).toHaveValue('');
  });
});
