import { beforeEach, describe, expect, it, vi } from 'vitest';
import { ApiKeyStore } from './apiKey';
import { createLlamaSocket, socketAuth } from './socket';

const io = vi.hoisted(() => vi.fn((..._args: unknown[]) => ({ connected: false })));
vi.mock('socket.io-client', () => ({ io }));

type AuthFn = (send: (data: object) => void) => void;

/** The options the last `io()` call got (its last argument). */
function lastOptions(): { autoConnect?: boolean; auth?: unknown } {
  const args = io.mock.calls[io.mock.calls.length - 1] ?? [];
  return args[args.length - 1] as { autoConnect?: boolean; auth?: unknown };
}

/** What the handshake's `auth` would send now. */
function handshake(): object {
  const auth = lastOptions().auth;
  expect(typeof auth).toBe('function');
  let sent: object | undefined;
  (auth as AuthFn)((data) => {
    sent = data;
  });
  if (sent === undefined) throw new Error('auth sent nothing');
  return sent;
}

describe('createLlamaSocket', () => {
  beforeEach(() => {
    io.mockClear();
  });

  it('hands socket.io an auth payload with the key of the moment, on each handshake', () => {
    const keys = new ApiKeyStore(null);
    createLlamaSocket(undefined, keys);
    expect(io).toHaveBeenCalledTimes(1);
    expect(lastOptions().autoConnect).toBe(false);
    expect(handshake()).toEqual({});

    keys.use('admin-key-0123456789');
    // socket.io calls `auth` again when it reconnects: the new key goes with it.
    expect(handshake()).toEqual({ token: 'admin-key-0123456789' });
    keys.forget();
    expect(handshake()).toEqual({});
  });

  it('connects to the URL given, with the same auth', () => {
    const keys = new ApiKeyStore(null);
    keys.use('admin-key-0123456789');
    createLlamaSocket('http://127.0.0.1:3000', keys);
    expect(io.mock.calls[0]?.[0]).toBe('http://127.0.0.1:3000');
    expect(handshake()).toEqual({ token: 'admin-key-0123456789' });
  });
});

describe('socketAuth', () => {
  it('is {token} with a key, and empty without', () => {
    expect(socketAuth('k-0123456789abcdef')).toEqual({ token: 'k-0123456789abcdef' });
    expect(socketAuth(null)).toEqual({});
  });
});
