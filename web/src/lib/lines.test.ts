import { describe, expect, it } from 'vitest';
import { appendOverlapping, capLines } from './lines';

describe('capLines', () => {
  it('keeps the last lines', () => {
    expect(capLines(['a', 'b', 'c'], 2)).toEqual(['b', 'c']);
    expect(capLines(['a'], 2)).toEqual(['a']);
  });
});

describe('appendOverlapping', () => {
  it('appends when either side is empty', () => {
    expect(appendOverlapping([], ['a'])).toEqual(['a']);
    expect(appendOverlapping(['a'], [])).toEqual(['a']);
  });

  it('drops the overlap between the end of prev and the start of next', () => {
    expect(appendOverlapping(['a', 'b', 'c'], ['b', 'c', 'd'])).toEqual(['a', 'b', 'c', 'd']);
    expect(appendOverlapping(['a', 'b', 'c'], ['c', 'd'])).toEqual(['a', 'b', 'c', 'd']);
    expect(appendOverlapping(['a', 'b'], ['a', 'b'])).toEqual(['a', 'b']);
  });

  it('takes next alone when it contains all of prev', () => {
    expect(appendOverlapping(['b', 'c'], ['a', 'b', 'c', 'd'])).toEqual(['a', 'b', 'c', 'd']);
  });

  it('keeps both when they do not overlap', () => {
    expect(appendOverlapping(['a', 'b'], ['x', 'y'])).toEqual(['a', 'b', 'x', 'y']);
  });
});
