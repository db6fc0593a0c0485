import { describe, expect, it } from 'vitest';
import { gatewayModel, pullFixture as pull } from '../test/fixtures';
import { mergePull, mergePulls, parsePull, parsePulls, pullProgress, readSource, removableModels, supersedes } from './pulls';

const MiB = 1024 * 1024;

describe('parsePull', () => {
  it('reads a pull and refuses what has no id', () => {
    expect(parsePull(pull())).toEqual(pull());
    expect(parsePull({ id: '' })).toBeNull();
    expect(parsePull(null)).toBeNull();
    expect(parsePull({ id: 'x', bytes: -3, total: 'lots', error: '' })).toMatchObject({
      id: 'x',
      bytes: 0,
      total: 0,
      error: null,
      state: 'downloading',
      files: [],
    });
  });

  it('reads a list, leaving the malformed out', () => {
    expect(parsePulls({ pulls: [pull(), 7] })).toEqual([pull()]);
    expect(parsePulls({})).toBeNull();
  });
});

describe('merging', () => {
  it('takes the word furthest along: an end over a download, more bytes over fewer', () => {
    const at = (bytes: number, state = 'downloading') => pull({ bytes, state });
    expect(supersedes(at(2), at(1))).toBe(true);
    expect(supersedes(at(1), at(2))).toBe(false);
    expect(supersedes(at(0, 'cancelled'), at(5))).toBe(true);
    expect(supersedes(at(5), at(0, 'failed'))).toBe(false);
    expect(mergePull([at(5 * MiB)], at(3 * MiB))[0]?.bytes).toBe(5 * MiB);
  });

  it('keeps the newest first and the pulls only this page knows', () => {
    const old = pull({ id: 'old', startedAt: 1 });
    const fresh = pull({ id: 'new', startedAt: 2 });
    expect(mergePulls([old], [fresh]).map((p) => p.id)).toEqual(['new', 'old']);
  });
});

describe('pullProgress', () => {
  it('says bytes of total and the percent, floored', () => {
    expect(pullProgress(pull())).toEqual({ percent: 25, text: '12.0 MiB of 48.0 MiB (25%)' });
    expect(pullProgress(pull({ bytes: 48 * MiB - 1 })).percent).toBe(99);
  });

  it('has no percent while the size is unknown', () => {
    expect(pullProgress(pull({ total: 0, bytes: 3 * MiB }))).toEqual({ percent: null, text: '3.0 MiB' });
  });

  it('says the size alone once done', () => {
    expect(pullProgress(pull({ state: 'done', bytes: 48 * MiB }))).toEqual({ percent: 100, text: '48.0 MiB' });
  });
});

describe('readSource', () => {
  it('sends a repository alone, with a tag, or with a file', () => {
    expect(readSource(' acme/tiny-GGUF ', '')).toEqual({ ok: true, source: 'acme/tiny-GGUF' });
    expect(readSource('acme/tiny-GGUF', 'Q4_K_M')).toEqual({ ok: true, source: 'acme/tiny-GGUF:Q4_K_M' });
    expect(readSource('acme/tiny-GGUF', 'tiny-Q8_0.gguf')).toEqual({ ok: true, source: 'acme/tiny-GGUF/tiny-Q8_0.gguf' });
    expect(readSource('acme/tiny-GGUF', 'Q8/tiny-Q8-00001-of-00002.gguf')).toEqual({
      ok: true,
      source: 'acme/tiny-GGUF/Q8/tiny-Q8-00001-of-00002.gguf',
    });
  });

  it("takes the repository's address on huggingface.co and a whole source pasted in", () => {
    expect(readSource('https://huggingface.co/acme/tiny-GGUF/', 'Q4_0')).toEqual({ ok: true, source: 'acme/tiny-GGUF:Q4_0' });
    expect(readSource('acme/tiny-GGUF:Q4_0', '')).toEqual({ ok: true, source: 'acme/tiny-GGUF:Q4_0' });
    expect(readSource('hf.co/acme/tiny-GGUF', '')).toEqual({ ok: true, source: 'acme/tiny-GGUF' });
  });

  it('says what is wrong with something that is not a repository', () => {
    expect(readSource('', 'Q4_0')).toMatchObject({ ok: false });
    expect(readSource('tiny', '')).toEqual({ ok: false, problem: '“tiny” is not a repository: write it as owner/name.' });
  });
});

describe('removableModels', () => {
  it('takes the models the list calls pulled and those a finished pull brought', () => {
    const models = [gatewayModel({ id: 'a' }), gatewayModel({ id: 'b', removable: true }), gatewayModel({ id: 'tiny-Q4_K_M' })];
    expect([...removableModels(models, [])]).toEqual(['b']);
    expect([...removableModels(models, [pull({ state: 'done' })])]).toEqual(['b', 'tiny-Q4_K_M']);
    expect([...removableModels(models, [pull({ state: 'downloading' })])]).toEqual(['b']);
  });
});
