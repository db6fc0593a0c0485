import { describe, expect, it } from 'vitest';
import { gatewayModel, modelsEvent, TWO_MODELS } from '../test/fixtures';
import { localLastUsed, modelActions, modelLook, parseModelsPayload, ttlLeftAt } from './models';

describe('parseModelsPayload', () => {
  it('reads the envelope and the bare REST shape', () => {
    const none = { config: null, peers: [] };
    expect(parseModelsPayload(modelsEvent())).toEqual({ models: TWO_MODELS, timestamp: modelsEvent().timestamp, ...none });
    expect(parseModelsPayload({ models: TWO_MODELS })).toEqual({ models: TWO_MODELS, timestamp: null, ...none });
  });

  it("reads the config's last reload and a front's peers", () => {
    const parsed = parseModelsPayload({
      data: {
        models: [],
        config: {
          path: '/etc/llamaherd/config.json',
          loadedAt: 5,
          lastReload: { ok: false, at: 6, trigger: 'SIGHUP', changes: [], needsRestart: [], error: 'bad key' },
        },
        peers: [{ name: 'gpu1', url: 'http://10.0.0.5:3000', reachable: false, problem: 'does not answer', models: ['coder'] }, 'junk'],
      },
    });
    expect(parsed?.config).toEqual({
      path: '/etc/llamaherd/config.json',
      loadedAt: 5,
      lastReload: { ok: false, at: 6, trigger: 'SIGHUP', changes: [], needsRestart: [], error: 'bad key' },
    });
    expect(parsed?.peers).toEqual([
      { name: 'gpu1', url: 'http://10.0.0.5:3000', reachable: false, problem: 'does not answer', models: ['coder'] },
    ]);
  });

  it('fills what a model leaves out and drops entries without an id', () => {
    const parsed = parseModelsPayload({ data: { models: [{ id: 'x' }, { name: 'no id' }, 'junk'] }, timestamp: 5 });
    expect(parsed?.models).toHaveLength(1);
    expect(parsed?.models[0]).toMatchObject({
      id: 'x',
      aliases: [],
      default: false,
      phase: 'unloaded',
      inFlight: 0,
      lastUsed: null,
      ttlLeft: null,
      size: null,
      lastError: null,
    });
  });

  it('refuses payloads without a model list', () => {
    expect(parseModelsPayload(null)).toBeNull();
    expect(parseModelsPayload({ data: { status: 'ready' } })).toBeNull();
  });
});

describe('modelActions', () => {
  it.each([
    ['unloaded', { load: true, unload: false }],
    ['loading', { load: false, unload: true }],
    ['ready', { load: false, unload: true }],
    ['unloading', { load: true, unload: false }],
    ['failed', { load: true, unload: true }],
    ['a-new-phase', { load: true, unload: true }],
  ])('in %s allows %o', (phase, expected) => {
    expect(modelActions({ phase })).toEqual(expected);
  });

  it('does not offer a load again while a requested one waits for room', () => {
    expect(modelActions({ phase: 'unloaded', loadRequested: true })).toEqual({ load: false, unload: false });
  });
});

describe('modelLook', () => {
  const look = (overrides: Parameters<typeof gatewayModel>[0]) => modelLook(gatewayModel(overrides));

  it('follows the phase', () => {
    expect(look({ phase: 'ready' })).toMatchObject({ label: 'ready', color: 'success', busy: false });
    expect(look({ phase: 'loading', state: 'starting' })).toMatchObject({ label: 'loading', color: 'info', busy: true });
    expect(look({ phase: 'unloading', state: 'stopping' })).toMatchObject({ label: 'unloading', busy: true });
    expect(look({ phase: 'unloaded', state: 'initial' })).toMatchObject({ label: 'unloaded', color: 'default' });
  });

  it('shows a requested load that waits for room, until it begins', () => {
    const waiting = modelLook({ ...gatewayModel({ phase: 'unloaded', state: 'initial' }), loadRequested: true });
    expect(waiting).toMatchObject({ label: 'load requested', color: 'info', busy: true });
    expect(modelLook({ ...gatewayModel({ phase: 'loading' }), loadRequested: true }).label).toBe('loading');
  });

  it('shows draining over ready, and trouble over everything', () => {
    const draining = look({ phase: 'ready', draining: true, inFlight: 2 });
    expect(draining).toMatchObject({ label: 'draining', color: 'warning', busy: true });
    expect(draining.detail).toContain('Finishing 2 requests in flight');
    expect(look({ phase: 'loading', state: 'crashed' })).toMatchObject({ label: 'crashed', color: 'warning' });
    expect(look({ phase: 'failed', state: 'error' })).toMatchObject({ label: 'failed', color: 'error' });
    expect(look({ phase: 'ready', state: 'error', draining: true })).toMatchObject({ label: 'error', color: 'error' });
  });

  it('shows a stopped model as stopped, with the reason, once it is down', () => {
    const stopped = look({ phase: 'unloaded', state: 'initial', stopped: 'stopped by an operator' });
    expect(stopped).toMatchObject({ label: 'stopped', color: 'default', busy: false });
    expect(stopped.detail).toContain('stopped by an operator');
    expect(look({ phase: 'ready', draining: true, inFlight: 1, stopped: 'stopped' }).label).toBe('draining');
  });
});

describe('ticking fields', () => {
  it('places lastUsed on the local clock, whatever the server clock says', () => {
    // The server's clock is an hour ahead; it was used 12 s before the event.
    const server = Date.parse('2025-12-26T12:00:00Z');
    const local = Date.parse('2025-12-26T11:00:00Z');
    expect(localLastUsed(server - 12_000, server, local)).toBe(local - 12_000);
    expect(localLastUsed(null, server, local)).toBeNull();
    expect(localLastUsed(1234, null, local)).toBe(1234);
  });

  it('counts the TTL down from when it arrived, never below zero', () => {
    expect(ttlLeftAt(30, 1000, 1000)).toBe(30);
    expect(ttlLeftAt(30, 1000, 11_500)).toBeCloseTo(19.5);
    expect(ttlLeftAt(30, 1000, 99_000)).toBe(0);
    expect(ttlLeftAt(null, 1000, 2000)).toBeNull();
  });
});
