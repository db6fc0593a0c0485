import type {
  LlamaControlAction,
  LlamaExit,
  LlamaModel,
  LlamaServiceStatus,
  LlamaStatus,
} from '../types/llama';

type Dict = Record<string, unknown>;

const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v);
const num = (v: unknown, fallback: number): number =>
  typeof v === 'number' && Number.isFinite(v) ? v : fallback;
const strOrNull = (v: unknown): string | null =>
  typeof v === 'string' && v !== '' ? v : null;

function normalizeModel(raw: unknown, index: number): LlamaModel | null {
  if (!isDict(raw)) return null;
  const id = typeof raw.id === 'string' ? raw.id : String(raw.id ?? raw.name ?? `model-${index}`);
  return {
    id,
    name: typeof raw.name === 'string' && raw.name !== '' ? raw.name : id,
    size: num(raw.size, 0),
    type: typeof raw.type === 'string' ? raw.type : '',
    modified_at: num(raw.modified_at, 0),
  };
}

/** Coerce a `data` object from the server into a well-formed {@link LlamaStatus}. */
function normalizeStatus(raw: unknown): LlamaStatus | null {
  if (!isDict(raw) || typeof raw.status !== 'string') return null;
  const models = Array.isArray(raw.models)
    ? raw.models.map(normalizeModel).filter((m): m is LlamaModel => m !== null)
    : [];
  const status: LlamaStatus = {
    // Shown verbatim even when a newer server sends a status this build does not know.
    status: raw.status as LlamaServiceStatus,
    models,
    lastError: strOrNull(raw.lastError),
    retries: num(raw.retries, 0),
    uptime: num(raw.uptime, 0),
    startedAt: strOrNull(raw.startedAt),
  };
  if (typeof raw.maxRetries === 'number') status.maxRetries = raw.maxRetries;
  if (typeof raw.pid === 'number' || raw.pid === null) status.pid = raw.pid;
  if (typeof raw.adopted === 'boolean') status.adopted = raw.adopted;
  if ('nextRetryAt' in raw) status.nextRetryAt = strOrNull(raw.nextRetryAt);
  if (typeof raw.restarts === 'number') status.restarts = raw.restarts;
  if (raw.lastExit === null) status.lastExit = null;
  else if (isDict(raw.lastExit)) status.lastExit = normalizeExit(raw.lastExit);
  return status;
}

function normalizeExit(raw: Dict): LlamaExit {
  const exit: LlamaExit = {
    code: typeof raw.code === 'number' ? raw.code : null,
    signal: strOrNull(raw.signal),
  };
  // Older servers send no `lines`: leave the field out rather than invent an empty output.
  if (Array.isArray(raw.lines)) exit.lines = raw.lines.map((line) => String(line));
  return exit;
}

/**
 * Read a `llamaStatus` payload: the `{type, data, timestamp}` envelope, or (leniently)
 * a bare data object.
 */
export function parseStatusPayload(
  payload: unknown,
): { data: LlamaStatus; timestamp: number | null } | null {
  if (!isDict(payload)) return null;
  if (isDict(payload.data)) {
    const data = normalizeStatus(payload.data);
    if (!data) return null;
    const ts = payload.timestamp;
    return { data, timestamp: typeof ts === 'number' && Number.isFinite(ts) ? ts : null };
  }
  const data = normalizeStatus(payload);
  return data ? { data, timestamp: null } : null;
}

/** Read a `llamaLog` payload; the list of new lines (empty when malformed). */
export function parseLogPayload(payload: unknown): string[] {
  if (!isDict(payload)) return [];
  const data = isDict(payload.data) ? payload.data : payload;
  return Array.isArray(data.lines) ? data.lines.map((l) => String(l)) : [];
}

/** Whose lines a `llamaLog` payload carries: its `data.model`, or null (older servers). */
export function logPayloadModel(payload: unknown): string | null {
  if (!isDict(payload) || !isDict(payload.data)) return null;
  return strOrNull(payload.data.model);
}

/**
 * Read a `llamaModelStatus` payload: the model it names and its status (as `llamaStatus`'s
 * data); null when malformed or naming no model.
 */
export function parseModelStatusPayload(
  payload: unknown,
): { model: string; data: LlamaStatus; timestamp: number | null } | null {
  if (!isDict(payload) || !isDict(payload.data)) return null;
  const model = strOrNull(payload.data.model);
  const parsed = parseStatusPayload(payload);
  return model && parsed ? { model, ...parsed } : null;
}

/**
 * When llama-server started, on the local clock, in ms since the epoch, or null
 * when unknown.
 *
 * Derived from `startedAt`, corrected for clock skew between the server and the
 * browser: the envelope's `timestamp` (server clock) tells how long before the
 * event the server started, and that is placed relative to when the event
 * arrived here. Without a timestamp, the event's `uptime` gives the same
 * correction; a raw `startedAt` is used only when neither is usable.
 */
export function localStartTime(
  data: Pick<LlamaStatus, 'startedAt' | 'uptime'>,
  serverTimestamp: number | null,
  receivedAt: number,
): number | null {
  const started = data.startedAt ? Date.parse(data.startedAt) : Number.NaN;
  if (Number.isFinite(started)) {
    if (serverTimestamp !== null) return receivedAt - Math.max(0, serverTimestamp - started);
    if (Number.isFinite(data.uptime)) return receivedAt - Math.max(0, data.uptime) * 1000;
    return started;
  }
  if (Number.isFinite(data.uptime)) return receivedAt - Math.max(0, data.uptime) * 1000;
  return null;
}

/** Which of start, stop and restart make sense in a state. */
export type ActionAvailability = Readonly<Record<LlamaControlAction, boolean>>;

/**
 * What each control does in each state, following the supervisor's rules (start is a no-op
 * while supervision runs; stop always ends in `initial`; restart is stop then a start with a
 * fresh retry count):
 *
 * - `initial`: nothing runs, so only start does anything.
 * - `checking`: the supervisor is asking the port who is there; stop cancels that. A restart
 *   would only ask again.
 * - `starting`: stop abandons the load. Restart is allowed too: in a crash loop the state
 *   swings between `crashed` and `starting` every few seconds, and a restart button that
 *   flickered in and out of reach under the pointer would be worse than one that is always
 *   there; and a load may take up to a minute before it times out, so restart is also how
 *   to begin again at once, with a fresh retry count, after fixing what failed. Start is a
 *   no-op here.
 * - `ready`: stop and restart. Start is a no-op: it is already running.
 * - `crashed`: stop ends the retry loop; restart retries now with a fresh count instead of
 *   waiting out the backoff. Start is a no-op while the retry loop runs.
 * - `stopping`: nothing; the stop ends in `initial` within seconds, and every action would
 *   only queue behind it.
 * - `error`: the supervisor gave up; start or restart try again with a fresh retry count,
 *   stop clears the error back to `initial`.
 */
const ACTIONS: Record<LlamaServiceStatus, ActionAvailability> = {
  initial: { start: true, stop: false, restart: false },
  checking: { start: false, stop: true, restart: false },
  starting: { start: false, stop: true, restart: true },
  ready: { start: false, stop: true, restart: true },
  crashed: { start: false, stop: true, restart: true },
  stopping: { start: false, stop: false, restart: false },
  error: { start: true, stop: true, restart: true },
};

const NONE: ActionAvailability = { start: false, stop: false, restart: false };
const ALL: ActionAvailability = { start: true, stop: true, restart: true };

/**
 * The controls that make sense in `status`. `null` (no status received yet) allows none. A
 * status this build does not know (a newer server's) allows all: the server still refuses
 * what it cannot do, and an old page must not lock its user out.
 */
export function availableActions(status: string | null): ActionAvailability {
  if (status === null) return NONE;
  return Object.prototype.hasOwnProperty.call(ACTIONS, status)
    ? ACTIONS[status as LlamaServiceStatus]
    : ALL;
}
