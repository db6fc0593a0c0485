import type { ConfigInfo, GatewayModel, ModelAction, PeerStatus, ReloadReport } from '../types/gateway';

type Dict = Record<string, unknown>;

const isDict = (v: unknown): v is Dict => typeof v === 'object' && v !== null && !Array.isArray(v);
const numOr = <T>(v: unknown, fallback: T): number | T =>
  typeof v === 'number' && Number.isFinite(v) ? v : fallback;
const strOrNull = (v: unknown): string | null => (typeof v === 'string' && v !== '' ? v : null);

function normalizeModel(raw: unknown): GatewayModel | null {
  if (!isDict(raw) || typeof raw.id !== 'string' || raw.id === '') return null;
  return {
    id: raw.id,
    aliases: Array.isArray(raw.aliases) ? raw.aliases.map(String) : [],
    default: raw.default === true,
    state: typeof raw.state === 'string' ? raw.state : 'initial',
    phase: typeof raw.phase === 'string' ? raw.phase : 'unloaded',
    loaded: raw.loaded === true,
    draining: raw.draining === true,
    inFlight: numOr(raw.inFlight, 0),
    queued: numOr(raw.queued, 0),
    maxConcurrency: numOr(raw.maxConcurrency, 1),
    lastUsed: numOr(raw.lastUsed, null),
    ttlSeconds: numOr(raw.ttlSeconds, null),
    ttlLeft: numOr(raw.ttlLeft, null),
    pinned: raw.pinned === true,
    port: numOr(raw.port, null),
    pid: numOr(raw.pid, null),
    retries: numOr(raw.retries, 0),
    lastError: strOrNull(raw.lastError),
    waitingFor: strOrNull(raw.waitingFor),
    stopped: strOrNull(raw.stopped),
    retryIn: numOr(raw.retryIn, null),
    preload: numOr(raw.preload, null),
    path: strOrNull(raw.path),
    size: numOr(raw.size, null),
    architecture: strOrNull(raw.architecture),
    parameters: numOr(raw.parameters, null),
    quantisation: strOrNull(raw.quantisation),
    contextLength: numOr(raw.contextLength, null),
    memoryMb: numOr(raw.memoryMb, null),
    removable: raw.removable === true,
  };
}

/**
 * Read a `llamaModels` payload (the `{type, data, timestamp}` envelope, or leniently a bare
 * `{models}` like `GET /api/gateway/models`); null when it holds no model list.
 */
export function parseModelsPayload(payload: unknown): {
  models: GatewayModel[];
  timestamp: number | null;
  config: ConfigInfo | null;
  peers: PeerStatus[];
} | null {
  if (!isDict(payload)) return null;
  const data = isDict(payload.data) ? payload.data : payload;
  if (!Array.isArray(data.models)) return null;
  const models = data.models.map(normalizeModel).filter((m): m is GatewayModel => m !== null);
  const ts = payload.timestamp;
  const peers = Array.isArray(data.peers) ? data.peers.map(parsePeer).filter((p): p is PeerStatus => p !== null) : [];
  return {
    models,
    timestamp: typeof ts === 'number' && Number.isFinite(ts) ? ts : null,
    config: parseConfig(data.config),
    peers,
  };
}

function parseReload(raw: unknown): ReloadReport | null {
  if (!isDict(raw) || typeof raw.ok !== 'boolean') return null;
  const strings = (v: unknown) => (Array.isArray(v) ? v.map(String) : []);
  return {
    ok: raw.ok,
    at: numOr(raw.at, 0),
    trigger: typeof raw.trigger === 'string' ? raw.trigger : '?',
    changes: strings(raw.changes),
    needsRestart: strings(raw.needsRestart),
    error: strOrNull(raw.error),
  };
}

/** `data.config` of `llamaModels`: null under a llamaherd that has no config file. */
export function parseConfig(raw: unknown): ConfigInfo | null {
  if (!isDict(raw)) return null;
  return { path: strOrNull(raw.path), loadedAt: numOr(raw.loadedAt, null), lastReload: parseReload(raw.lastReload) };
}

function parsePeer(raw: unknown): PeerStatus | null {
  if (!isDict(raw) || typeof raw.name !== 'string') return null;
  return {
    name: raw.name,
    url: typeof raw.url === 'string' ? raw.url : '',
    reachable: raw.reachable === true,
    problem: strOrNull(raw.problem),
    models: Array.isArray(raw.models) ? raw.models.map(String) : [],
  };
}

/** Read one model out of an acknowledgement; null when malformed. */
export function parseModel(raw: unknown): GatewayModel | null {
  return normalizeModel(raw);
}

export type ChipColor = 'default' | 'primary' | 'secondary' | 'error' | 'info' | 'success' | 'warning';

export interface ModelLook {
  /** What the chip says. */
  label: string;
  color: ChipColor;
  /** Something is under way (a spinner beside the chip). */
  busy: boolean;
  /** One sentence for the tooltip. */
  detail: string;
}

/**
 * How a model's state chip looks. The scheduler's phase says what matters to someone sending
 * requests (can it answer now?), but the supervisor's state wins when it tells of trouble
 * (crashed, error), and draining wins over `ready`: such a model takes no new requests.
 */
export function modelLook(
  m: Pick<GatewayModel, 'state' | 'phase' | 'draining' | 'inFlight'> & {
    loadRequested?: boolean;
    stopped?: string | null;
  },
): ModelLook {
  const where = `llama-server ${m.state}, scheduler ${m.phase}`;
  if (m.stopped && m.phase === 'unloaded') {
    return { label: 'stopped', color: 'default', busy: false, detail: `Stopped (${m.stopped}); refuses requests until loaded again (${where})` };
  }
  if (m.state === 'error' || m.phase === 'failed') {
    return { label: m.phase === 'failed' ? 'failed' : 'error', color: 'error', busy: false, detail: `Failed to load (${where})` };
  }
  if (m.state === 'crashed') {
    return { label: 'crashed', color: 'warning', busy: true, detail: `Crashed; restarting (${where})` };
  }
  if (m.draining) {
    const n = m.inFlight;
    return {
      label: 'draining',
      color: 'warning',
      busy: n > 0,
      detail: `Finishing ${n} request${n === 1 ? '' : 's'} in flight, then unloads (${where})`,
    };
  }
  if (m.loadRequested && (m.phase === 'unloaded' || m.phase === 'unloading')) {
    return {
      label: 'load requested',
      color: 'info',
      busy: true,
      detail: `Loads as soon as there is room: another model is finishing its requests or unloading (${where})`,
    };
  }
  switch (m.phase) {
    case 'ready':
      return { label: 'ready', color: 'success', busy: false, detail: `Loaded and serving (${where})` };
    case 'loading':
      return { label: 'loading', color: 'info', busy: true, detail: `Loading (${where})` };
    case 'unloading':
      return { label: 'unloading', color: 'default', busy: true, detail: `Unloading (${where})` };
    case 'unloaded':
      return { label: 'unloaded', color: 'default', busy: false, detail: `Not loaded; loads on its first request (${where})` };
    default:
      return { label: String(m.phase), color: 'default', busy: false, detail: where };
  }
}

/**
 * Which of load and unload make sense: load unless it is loaded or loading (or its load was
 * requested and waits for room); unload unless it is unloaded or unloading. A phase this build
 * does not know allows both (the server refuses what it cannot do, and an old page must not
 * lock its user out).
 */
export function modelActions(
  m: Pick<GatewayModel, 'phase'> & { loadRequested?: boolean },
): Readonly<Record<ModelAction, boolean>> {
  return {
    load: m.phase !== 'ready' && m.phase !== 'loading' && !m.loadRequested,
    unload: m.phase !== 'unloaded' && m.phase !== 'unloading',
  };
}

/**
 * When a model was last used, on the local clock (ms), or null. The server's `lastUsed` is
 * on its clock; the event's `timestamp` (same clock) says how long before the event that was,
 * and that is placed before the moment the event arrived here, so clock skew does not matter.
 */
export function localLastUsed(
  lastUsed: number | null,
  serverTimestamp: number | null,
  receivedAt: number,
): number | null {
  if (lastUsed === null) return null;
  if (serverTimestamp === null) return lastUsed;
  return receivedAt - Math.max(0, serverTimestamp - lastUsed);
}

/** Seconds left of a TTL that had `ttlLeft` seconds when the event arrived, at `now`. */
export function ttlLeftAt(ttlLeft: number | null, receivedAt: number, now: number): number | null {
  if (ttlLeft === null) return null;
  return Math.max(0, ttlLeft - Math.max(0, now - receivedAt) / 1000);
}
