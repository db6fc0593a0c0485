import { act, renderHook } from '@testing-library/react';
import { afterEach, describe, expect, it } from 'vitest';
import { parseHash, routeHash, useHashRoute } from './useHashRoute';

describe('parseHash and routeHash', () => {
  it.each([
    ['', { view: 'status', model: null }],
    ['#/', { view: 'status', model: null }],
    ['#/elsewhere', { view: 'status', model: null }],
    ['#/health', { view: 'health', model: null }],
    ['#/health/', { view: 'health', model: null }],
    ['#/health/alpha', { view: 'health', model: 'alpha' }],
    ['#/health/org%2Fmodel%20q4', { view: 'health', model: 'org/model q4' }],
    ['#/status', { view: 'status', model: null }],
    ['#/status/beta', { view: 'status', model: 'beta' }],
    ['#/status/beta/', { view: 'status', model: 'beta' }],
    ['#/status/org%2Fmodel%20q4', { view: 'status', model: 'org/model q4' }],
    ['#/status/100%', { view: 'status', model: null }],
  ])('%s', (hash, route) => {
    expect(parseHash(hash)).toEqual(route);
  });

  it('round-trips', () => {
    for (const route of [
      { view: 'status', model: null },
      { view: 'health', model: null },
      { view: 'health', model: 'org/model q4' },
      { view: 'status', model: 'org/model q4' },
    ] as const) {
      expect(parseHash(routeHash(route))).toEqual(route);
    }
  });
});

describe('useHashRoute', () => {
  afterEach(() => {
    window.location.hash = '';
  });

  it('follows the hash', () => {
    window.location.hash = '#/health/b';
    const { result } = renderHook(() => useHashRoute());
    expect(result.current).toEqual({ view: 'health', model: 'b' });
    act(() => {
      window.location.hash = '#/';
      window.dispatchEvent(new HashChangeEvent('hashchange'));
    });
    expect(result.current).toEqual({ view: 'status', model: null });
  });
});
