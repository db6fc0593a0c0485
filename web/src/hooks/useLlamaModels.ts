import { useCallback, useEffect, useMemo, useRef, useState } from 'react';
import type { LlamaSocket } from '../lib/socket';
import { localLastUsed, parseModel, parseModelsPayload } from '../lib/models';
import {
  LLAMA_MODELS_EVENT,
  LOAD_MODEL,
  REQUEST_LLAMA_MODELS,
  UNLOAD_MODEL,
  type ConfigInfo,
  type GatewayModel,
  type PeerStatus,
  type ModelAction,
  type ModelActionAck,
} from '../types/gateway';

/** How long a load or unload may wait for llamaherd's acknowledgement (it answers at once). */
export const MODEL_ACK_TIMEOUT_MS = 15_000;
/**
 * How long a load that was accepted but has not begun (the model waits for room: another is
 * finishing its requests or unloading) is shown as requested. The server's entry does not
 * say that a load is pending, so the page remembers it, for a while.
 */
export const LOAD_REQUEST_HOLD_MS = 30_000;

/** A model as the page holds it: the server's entry, with its ticking fields anchored here. */
export interface LiveModel extends GatewayModel {
  /** `lastUsed` on the local clock (ms), corrected for clock skew; null when never used. */
  lastUsedLocal: number | null;
  /** When `ttlLeft` was measured, on the local clock (ms). */
  receivedAt: number;
  /** This page asked for a load that has not begun yet (the model waits for room). */
  loadRequested: boolean;
}

export interface UseLlamaModelsOptions {
  /** The page's socket, owned by {@link useLlamaSocket}; this hook only listens and emits. */
  socket: LlamaSocket;
  /** Injected in tests. */
  ackTimeoutMs?: number;
  loadRequestHoldMs?: number;
}

export interface UseLlamaModelsResult {
  models: LiveModel[];
  /** No list has arrived yet. */
  isLoading: boolean;
  /** The default model's id (requests that name none go there), or null. */
  defaultId: string | null;
  /** The action in flight per model id (waiting for its acknowledgement). */
  pending: Readonly<Record<string, ModelAction>>;
  /** `loadModel` with an acknowledgement; never rejects. */
  load: (id: string) => Promise<ModelActionAck>;
  /** `unloadModel` with an acknowledgement; never rejects. */
  unload: (id: string) => Promise<ModelActionAck>;
  /** Ask for the list again. */
  refresh: () => void;
  /** When the config was loaded and how the last reload went; null when unknown. */
  config: ConfigInfo | null;
  /** A front's peers (other llamaherds whose models it serves); empty otherwise. */
  peers: PeerStatus[];
}

const EVENTS: Record<ModelAction, string> = { load: LOAD_MODEL, unload: UNLOAD_MODEL };

/** A model that has not begun to load (or is still on its way out). */
const notStarted = (phase: string) => phase === 'unloaded' || phase === 'unloading';

type Anchored = Omit<LiveModel, 'loadRequested'>;

function liveModels(models: GatewayModel[], timestamp: number | null, receivedAt: number): Anchored[] {
  return models.map((m) => ({ ...m, lastUsedLocal: localLastUsed(m.lastUsed, timestamp, receivedAt), receivedAt }));
}

/** Loads still waiting to begin: those whose model has started (or failed) are done. */
function stillRequested(requested: Readonly<Record<string, number>>, models: Anchored[]): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [id, at] of Object.entries(requested)) {
    const model = models.find((m) => m.id === id);
    if (model && notStarted(model.phase)) out[id] = at;
  }
  return out;
}

/** An acknowledged entry replaces its row; the ticking anchors stay (the ack has no timestamp). */
function mergeAcked(models: Anchored[], entry: GatewayModel): Anchored[] {
  return models.map((m) =>
    m.id === entry.id
      ? {
          ...entry,
          lastUsed: m.lastUsed,
          lastUsedLocal: m.lastUsedLocal,
          ttlLeft: entry.ttlLeft === null ? null : m.ttlLeft,
          receivedAt: m.receivedAt,
        }
      : m,
  );
}

function readAck(raw: unknown): ModelActionAck {
  if (typeof raw === 'object' && raw !== null) {
    const ack = raw as { ok?: unknown; model?: unknown; error?: unknown };
    if (ack.ok === true) {
      const model = parseModel(ack.model);
      if (model) return { ok: true, model };
    } else if (ack.ok === false) {
      return { ok: false, error: typeof ack.error === 'string' && ack.error ? ack.error : 'refused' };
    }
  }
  return { ok: false, error: 'llamaherd answered with something that is not an acknowledgement' };
}

/**
 * Every model of the gateway, live over the page's socket: requests the list on every
 * (re)connect, follows `llamaModels`, and sends `loadModel` / `unloadModel` with an
 * acknowledgement (one at a time per model). It never connects or disconnects the socket.
 */
export function useLlamaModels({
  socket,
  ackTimeoutMs = MODEL_ACK_TIMEOUT_MS,
  loadRequestHoldMs = LOAD_REQUEST_HOLD_MS,
}: UseLlamaModelsOptions): UseLlamaModelsResult {
  const [models, setModels] = useState<Anchored[] | null>(null);
  const [config, setConfig] = useState<ConfigInfo | null>(null);
  const [peers, setPeers] = useState<PeerStatus[]>(NO_PEERS);
  const [pending, setPending] = useState<Readonly<Record<string, ModelAction>>>({});
  // Model id -> when this page's accepted load was acknowledged (local ms).
  const [requested, setRequested] = useState<Readonly<Record<string, number>>>({});
  const pendingRef = useRef(new Set<string>());
  const timers = useRef(new Set<ReturnType<typeof setTimeout>>());
  const mounted = useRef(true);

  useEffect(() => {
    mounted.current = true;
    const onModels = (payload: unknown) => {
      const parsed = parseModelsPayload(payload);
      if (!parsed) return;
      const list = liveModels(parsed.models, parsed.timestamp, Date.now());
      setModels(list);
      setConfig(parsed.config);
      setPeers(parsed.peers);
      setRequested((r) => (Object.keys(r).length === 0 ? r : stillRequested(r, list)));
    };
    // Fires on the first connect and after every reconnection.
    const onConnect = () => socket.emit(REQUEST_LLAMA_MODELS);
    socket.on(LLAMA_MODELS_EVENT, onModels);
    socket.on('connect', onConnect);
    if (socket.connected) onConnect();
    const pendingTimers = timers.current;
    return () => {
      mounted.current = false;
      socket.off(LLAMA_MODELS_EVENT, onModels);
      socket.off('connect', onConnect);
      pendingTimers.forEach(clearTimeout);
      pendingTimers.clear();
    };
  }, [socket]);

  const control = useCallback(
    (action: ModelAction, id: string): Promise<ModelActionAck> => {
      if (!socket.connected) return Promise.resolve({ ok: false, error: 'not connected to llamaherd' });
      if (pendingRef.current.has(id)) {
        return Promise.resolve({ ok: false, error: `an action on ${id} is already waiting for an answer` });
      }
      pendingRef.current.add(id);
      setPending((p) => ({ ...p, [id]: action }));
      return new Promise<ModelActionAck>((resolve) => {
        let settled = false;
        const settle = (ack: ModelActionAck) => {
          if (settled) return;
          settled = true;
          clearTimeout(timer);
          timers.current.delete(timer);
          pendingRef.current.delete(id);
          if (mounted.current) {
            setPending(({ [id]: _done, ...rest }) => rest);
            if (ack.ok) {
              setModels((list) => (list ? mergeAcked(list, ack.model) : list));
              const waits = action === 'load' && notStarted(ack.model.phase);
              setRequested(({ [id]: _old, ...rest }) => (waits ? { ...rest, [id]: Date.now() } : rest));
            }
          }
          resolve(ack);
        };
        const timer = setTimeout(
          () => settle({ ok: false, error: `llamaherd did not answer within ${Math.round(ackTimeoutMs / 1000)} s` }),
          ackTimeoutMs,
        );
        timers.current.add(timer);
        socket.emit(EVENTS[action], { id }, (raw: unknown) => settle(readAck(raw)));
      });
    },
    [socket, ackTimeoutMs],
  );

  // Forget a requested load that never began (another page or the server called it off).
  useEffect(() => {
    const times = Object.values(requested);
    if (times.length === 0) return undefined;
    const wait = Math.max(0, Math.min(...times) + loadRequestHoldMs - Date.now());
    const timer = setTimeout(() => {
      const now = Date.now();
      setRequested((r) => Object.fromEntries(Object.entries(r).filter(([, at]) => at + loadRequestHoldMs > now)));
    }, wait);
    return () => clearTimeout(timer);
  }, [requested, loadRequestHoldMs]);

  const load = useCallback((id: string) => control('load', id), [control]);
  const unload = useCallback((id: string) => control('unload', id), [control]);
  const refresh = useCallback(() => {
    if (socket.connected) socket.emit(REQUEST_LLAMA_MODELS);
  }, [socket]);

  const list = useMemo(
    () => (models ?? EMPTY).map((m) => ({ ...m, loadRequested: m.id in requested })),
    [models, requested],
  );
  return {
    models: list,
    isLoading: models === null,
    defaultId: list.find((m) => m.default)?.id ?? null,
    pending,
    load,
    unload,
    refresh,
    config,
    peers,
  };
}

const NO_PEERS: PeerStatus[] = [];

const EMPTY: Anchored[] = [];
