/**
 * The API key of this browser tab, and whether llamaherd has just refused it.
 *
 * llamaherd may require an API key (`Authorization: Bearer KEY` on REST and inference calls,
 * `auth: {token: KEY}` on the Socket.IO handshake). The key is kept in `sessionStorage`: it
 * survives a reload of the tab and dies with it. Never `localStorage` (a key left on a shared
 * machine for good), never the address (it would end up in the history and in logs), never the
 * console.
 *
 * Every REST call, the playground and the socket read the key here; they report a refusal here
 * too, and the dashboard shows its key dialog while a refusal stands.
 */

/** The `sessionStorage` entry that holds the key. */
export const API_KEY_STORAGE_KEY = 'llamaherd.apiKey';

/** llamaherd's codes for a refused key (the `code` of its error body). */
export type AuthProblemCode = 'missing_api_key' | 'invalid_api_key' | 'insufficient_scope';

/** Why llamaherd refused a call: no key, a key it does not know, or one without the scope. */
export interface AuthProblem {
  code: AuthProblemCode;
  /** llamaherd's own sentence, shown as it is. */
  message: string;
}

/** What a component sees of the store; a new object on every change. */
export interface ApiKeyState {
  key: string | null;
  /** The standing refusal of the current key (or of no key), until a key is used or forgotten. */
  problem: AuthProblem | null;
  /** Counts the times the key was set or forgotten: whatever was fetched with the old one is stale. */
  generation: number;
}

type Listener = () => void;

/** `sessionStorage` where it can be used; null where it cannot (a sandboxed frame, some private modes). */
export function sessionStorageOrNull(): Storage | null {
  try {
    const storage = globalThis.sessionStorage;
    return storage ?? null;
  } catch {
    return null;
  }
}

/**
 * The key and the standing refusal, with listeners (for `useSyncExternalStore`). The storage
 * is read once, at construction: a tab's `sessionStorage` changes only through this tab.
 */
export class ApiKeyStore {
  private state: ApiKeyState;
  private readonly listeners = new Set<Listener>();

  constructor(private readonly storage: Storage | null = sessionStorageOrNull()) {
    let key: string | null = null;
    try {
      key = storage?.getItem(API_KEY_STORAGE_KEY) ?? null;
    } catch {
      key = null;
    }
    this.state = { key: key === '' ? null : key, problem: null, generation: 0 };
  }

  get key(): string | null {
    return this.state.key;
  }

  /** The current state; the same object until something changes. */
  snapshot = (): ApiKeyState => this.state;

  subscribe = (listener: Listener): (() => void) => {
    this.listeners.add(listener);
    return () => {
      this.listeners.delete(listener);
    };
  };

  /** Keep `key` for this tab (llamaherd accepted it): the refusal is over, data is refetched. */
  use(key: string): void {
    const trimmed = key.trim();
    if (trimmed === '') throw new Error('an empty API key');
    this.write(trimmed);
    this.change({ key: trimmed, problem: null, generation: this.state.generation + 1 });
  }

  /** Drop the key from this tab. */
  forget(): void {
    this.write(null);
    this.change({ key: null, problem: null, generation: this.state.generation + 1 });
  }

  /**
   * llamaherd refused a call made with `sentKey` (null: none). A refusal of a key that is no
   * longer the current one (a call still in flight when the key changed) is old news and
   * ignored; so is a repeat of the standing refusal.
   */
  refused(problem: AuthProblem, sentKey: string | null): void {
    if (sentKey !== this.state.key) return;
    const now = this.state.problem;
    if (now && now.code === problem.code && now.message === problem.message) return;
    this.change({ ...this.state, problem });
  }

  private write(key: string | null): void {
    try {
      if (key === null) this.storage?.removeItem(API_KEY_STORAGE_KEY);
      else this.storage?.setItem(API_KEY_STORAGE_KEY, key);
    } catch {
      // Storage full or refused: the key still works until the tab is reloaded.
    }
  }

  private change(next: ApiKeyState): void {
    this.state = next;
    for (const listener of [...this.listeners]) listener();
  }
}

/** The page's one store, shared by the REST client, the playground and the socket. */
export const apiKeyStore = new ApiKeyStore();

/** The `Authorization` header that carries `key`; none without a key. */
export function authorizationHeader(key: string | null): Record<string, string> {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

const CODES: ReadonlySet<string> = new Set<AuthProblemCode>(['missing_api_key', 'invalid_api_key', 'insufficient_scope']);

const DEFAULT_MESSAGES: Record<AuthProblemCode, string> = {
  missing_api_key: 'llamaherd requires an API key.',
  invalid_api_key: 'llamaherd does not know this API key.',
  insufficient_scope: 'This API key may not use the dashboard: it needs the admin scope.',
};

function problem(code: AuthProblemCode, message: unknown): AuthProblem {
  return { code, message: typeof message === 'string' && message.trim() !== '' ? message : DEFAULT_MESSAGES[code] };
}

/** The `error` object of an error body, if the body has one. */
export interface ErrorFields {
  message?: unknown;
  type?: unknown;
  code?: unknown;
}

/**
 * Whether an HTTP answer is a refused key, and which refusal: a 401; a 403 only when it
 * says it is about the key's scope (llamaherd's other 403s, such as a foreign Host, are not).
 * A 401 without a code is a missing key when none was sent, else an unknown one; a 401 or 403
 * whose code is another word is not about this key.
 */
export function httpAuthProblem(status: number, error: ErrorFields | null, sentKey: string | null): AuthProblem | null {
  const code = typeof error?.code === 'string' && CODES.has(error.code) ? (error.code as AuthProblemCode) : null;
  // Another word is about something else: Hugging Face refusing a gated repository to a pull.
  if (code === null && typeof error?.code === 'string' && error.code !== '') return null;
  if (status === 401) {
    if (code === 'missing_api_key' || code === 'invalid_api_key') return problem(code, error?.message);
    return problem(sentKey === null ? 'missing_api_key' : 'invalid_api_key', error?.message);
  }
  if (status === 403 && (code === 'insufficient_scope' || error?.type === 'permission_error')) {
    return problem('insufficient_scope', error?.message);
  }
  return null;
}

/**
 * Whether a Socket.IO `connect_error` is a refused key. Only a handshake the server refused
 * counts (socket.io then leaves the socket inactive; a transport error keeps it retrying), and
 * only when it is about the key: the error's `data.code` says so, or else its sentence speaks
 * of a key or a scope. Which refusal: the code, else a scope named in the sentence, else
 * missing or unknown by whether a key was sent.
 */
export function socketAuthProblem(err: unknown, active: boolean | undefined, sentKey: string | null): AuthProblem | null {
  if (active !== false || !(err instanceof Error)) return null;
  const data = (err as Error & { data?: unknown }).data;
  const rawCode = typeof data === 'object' && data !== null ? (data as { code?: unknown }).code : undefined;
  const message = err.message;
  if (typeof rawCode === 'string' && CODES.has(rawCode)) return problem(rawCode as AuthProblemCode, message);
  if (!/\bkey\b|\bscope\b/i.test(message)) return null;
  if (/\bscope\b/i.test(message)) return problem('insufficient_scope', message);
  return problem(sentKey === null ? 'missing_api_key' : 'invalid_api_key', message);
}
