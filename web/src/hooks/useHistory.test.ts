import { act, renderHook } from '@testing-library/react';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { jsonResponse } from '../test/fixtures';
import { historyFixture, NOW_S } from '../test/history';
import { useHistory, type UseHistoryOptions } from './useHistory';

const T0 = NOW_S * 1000;

function server(respond: (url: string) => Response | Promise<Response> = () => jsonResponse(historyFixture())) {
  return vi.fn(async (url: string, _init?: RequestInit) => respond(url));
}

function setup(options: Partial<UseHistoryOptions> = {}, fetchImpl = server()) {
  const hook = renderHook((props: Partial<UseHistoryOptions>) =>
    useHistory({ active: true, windowS: 3600, limit: 500, intervalMs: 10_000, fetchImpl, ...options, ...props }),
  );
  return { fetchImpl, ...hook };
}

/** Let the pending fetch answer. */
const settle = () => act(async () => {
  await vi.advanceTimersByTimeAsync(0);
});

function setVisibility(state: 'visible' | 'hidden') {
  Object.defineProperty(document, 'visibilityState', { configurable: true, get: () => state });
  document.dispatchEvent(new Event('visibilitychange'));
}

describe('useHistory', () => {
  beforeEach(() => {
    vi.useFakeTimers({ now: T0 });
  });
  afterEach(() => {
    vi.useRealTimers();
    setVisibility('visible');
  });

  it('fetches the window on the server clock at once, then again every interval', async () => {
    const { fetchImpl, result } = setup({ model: 'a', clockOffsetMs: 2000 });
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    expect(fetchImpl.mock.calls[0]?.[0]).toBe(`/api/history?model=a&since=${NOW_S + 2 - 3600}&limit=500`);
    expect(result.current.history).toBeNull();
    await settle();
    expect(result.current.history?.transitions).toHaveLength(8);
    expect(result.current).toMatchObject({ disabled: false, error: null, since: NOW_S + 2 - 3600, limit: 500 });

    await act(async () => {
      await vi.advanceTimersByTimeAsync(9_999);
    });
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    await act(async () => {
      await vi.advanceTimersByTimeAsync(1);
    });
    expect(fetchImpl).toHaveBeenCalledTimes(2);
    expect(fetchImpl.mock.calls[1]?.[0]).toBe(`/api/history?model=a&since=${NOW_S + 12 - 3600}&limit=500`);
  });

  it('says history is switched off on a 404', async () => {
    const fetchImpl = server(() => jsonResponse({ detail: 'Not Found' }, 404));
    const { result } = setup({}, fetchImpl);
    await settle();
    expect(result.current).toMatchObject({ disabled: true, history: null, error: null });
  });

  it('keeps the last history when a fetch fails, and says why', async () => {
    let fail = false;
    const fetchImpl = server(() => (fail ? jsonResponse({ error: { message: 'store closed', type: 'x' } }, 500) : jsonResponse(historyFixture())));
    const { result } = setup({}, fetchImpl);
    await settle();
    fail = true;
    await act(async () => {
      await vi.advanceTimersByTimeAsync(10_000);
    });
    expect(result.current.error).toBe('store closed');
    expect(result.current.history?.requests).toHaveLength(4);
    fail = false;
    await act(async () => {
      await vi.advanceTimersByTimeAsync(10_000);
    });
    expect(result.current.error).toBeNull();
  });

  it('fetches at once when the refresh key or the query changes', async () => {
    const { fetchImpl, rerender } = setup({ refreshKey: 'a:ready' });
    await settle();
    rerender({ refreshKey: 'a:crashed' });
    expect(fetchImpl).toHaveBeenCalledTimes(2);
    rerender({ refreshKey: 'a:crashed', windowS: 86_400 });
    expect(fetchImpl).toHaveBeenCalledTimes(3);
    expect(fetchImpl.mock.calls[2]?.[0]).toContain(`since=${NOW_S - 86_400}`);
    // A new clock offset is no reason to fetch.
    rerender({ refreshKey: 'a:crashed', windowS: 86_400, clockOffsetMs: 5 });
    expect(fetchImpl).toHaveBeenCalledTimes(3);
  });

  it('lets no older answer overwrite a newer one', async () => {
    const answers: Array<(r: Response) => void> = [];
    const fetchImpl = vi.fn(
      (_url: string, init?: RequestInit) =>
        new Promise<Response>((resolve, reject) => {
          answers.push(resolve);
          init?.signal?.addEventListener('abort', () => reject(new DOMException('aborted', 'AbortError')));
        }),
    );
    const { result, rerender } = setup({ refreshKey: 1 }, fetchImpl);
    rerender({ refreshKey: 2 });
    expect(fetchImpl.mock.calls[0]?.[1]?.signal?.aborted).toBe(true);
    await act(async () => {
      answers[1]?.(jsonResponse(historyFixture({ requests: [] })));
      answers[0]?.(jsonResponse(historyFixture()));
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(result.current.history?.requests).toEqual([]);
    expect(result.current.error).toBeNull();
  });

  it('pauses while the page is hidden and fetches at once when it shows again', async () => {
    const { fetchImpl } = setup();
    await settle();
    setVisibility('hidden');
    await act(async () => {
      await vi.advanceTimersByTimeAsync(60_000);
    });
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    await act(async () => {
      setVisibility('visible');
      await vi.advanceTimersByTimeAsync(0);
    });
    expect(fetchImpl).toHaveBeenCalledTimes(2);
  });

  it('fetches nothing while inactive, and stops when unmounted', async () => {
    const { fetchImpl, rerender, unmount } = setup({ active: false });
    await act(async () => {
      await vi.advanceTimersByTimeAsync(30_000);
    });
    expect(fetchImpl).not.toHaveBeenCalled();
    rerender({ active: true });
    await settle();
    expect(fetchImpl).toHaveBeenCalledTimes(1);
    unmount();
    await act(async () => {
      await vi.advanceTimersByTimeAsync(30_000);
    });
    expect(fetchImpl).toHaveBeenCalledTimes(1);
  });
});
