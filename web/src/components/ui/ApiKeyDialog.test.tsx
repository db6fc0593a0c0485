import { render, screen, waitFor } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it, vi } from 'vitest';
import { ApiKeyDialog } from './ApiKeyDialog';

const MISSING = { code: 'missing_api_key' as const, message: 'This llamaherd requires an API key.' };
const REVOKED = { code: 'invalid_api_key' as const, message: 'Unknown API key.' };

describe('ApiKeyDialog', () => {
  it('is not there while nothing is refused', () => {
    render(<ApiKeyDialog open={false} problem={null} check={vi.fn()} onAccepted={vi.fn()} />);
    expect(screen.queryByTestId('api-key-dialog')).not.toBeInTheDocument();
  });

  it('asks for a key with a password field; a missing key is no error to show', () => {
    render(<ApiKeyDialog open problem={MISSING} check={vi.fn()} onAccepted={vi.fn()} />);
    expect(screen.getByRole('dialog', { name: 'API key needed' })).toBeInTheDocument();
    expect(screen.getByTestId('api-key-input')).toHaveAttribute('type', 'password');
    expect(screen.getByTestId('api-key-submit')).toBeDisabled();
    expect(screen.queryByTestId('api-key-error')).not.toBeInTheDocument();
  });

  it("shows llamaherd's sentence when it refused the tab's key", () => {
    render(<ApiKeyDialog open problem={REVOKED} check={vi.fn()} onAccepted={vi.fn()} />);
    expect(screen.getByTestId('api-key-error')).toHaveTextContent(/^Unknown API key\.$/);
  });

  it('tries the key typed, shows why it was refused, and hands over the one accepted', async () => {
    const user = userEvent.setup();
    const check = vi.fn(async (key: string) => {
      if (key !== 'good-key-0123456789') throw new Error(`llamaherd does not know the key '${key.slice(0, 4)}…'.`);
    });
    const onAccepted = vi.fn();
    render(<ApiKeyDialog open problem={MISSING} check={check} onAccepted={onAccepted} />);

    await user.type(screen.getByTestId('api-key-input'), 'bad-key-000000000000');
    await user.click(screen.getByTestId('api-key-submit'));
    expect(await screen.findByTestId('api-key-error')).toHaveTextContent("llamaherd does not know the key 'bad-…'.");
    expect(onAccepted).not.toHaveBeenCalled();

    await user.clear(screen.getByTestId('api-key-input'));
    // Enter sends, as in any form; spaces around a pasted key do not count.
    await user.type(screen.getByTestId('api-key-input'), '  good-key-0123456789 {Enter}');
    expect(check).toHaveBeenLastCalledWith('good-key-0123456789');
    expect(onAccepted).toHaveBeenCalledWith('good-key-0123456789');
    expect(screen.getByTestId('api-key-input')).toHaveValue('');
  });

  it('sends one try at a time', async () => {
    const user = userEvent.setup();
    let answer: () => void = () => {};
    const check = vi.fn(
      () =>
        new Promise<void>((resolve) => {
          answer = resolve;
        }),
    );
    render(<ApiKeyDialog open problem={MISSING} check={check} onAccepted={vi.fn()} />);
    await user.type(screen.getByTestId('api-key-input'), 'slow-key-0123456789{Enter}');
    expect(screen.getByTestId('api-key-submit')).toBeDisabled();
    expect(screen.getByTestId('api-key-input')).toBeDisabled();
    await user.keyboard('{Enter}');
    expect(check).toHaveBeenCalledTimes(1);
    answer();
    await waitFor(() => expect(screen.getByTestId('api-key-input')).toBeEnabled());
  });
});
