import { fireEvent, render, screen } from '@testing-library/react';
import { describe, expect, it, vi } from 'vitest';
import { LogsPanel } from './LogsPanel';

/** jsdom has no layout: give the scroller fixed sizes. */
function fakeLayout(el: HTMLElement, scrollHeight: number, clientHeight = 100) {
  Object.defineProperty(el, 'scrollHeight', { configurable: true, get: () => scrollHeight });
  Object.defineProperty(el, 'clientHeight', { configurable: true, get: () => clientHeight });
}

describe('LogsPanel', () => {
  it('shows the lines in a monospace log', () => {
    render(<LogsPanel lines={['main: server is listening', 'slot 0: ready']} />);
    const panel = screen.getByTestId('logs-panel');
    expect(panel).toHaveTextContent('main: server is listening');
    expect(panel).toHaveTextContent('slot 0: ready');
    expect(panel).toHaveAttribute('role', 'log');
    expect(getComputedStyle(panel).fontFamily).toMatch(/monospace/);
    expect(screen.getByTestId('logs-count')).toHaveTextContent('2 lines');
  });

  it('says when there is nothing yet', () => {
    const { rerender } = render(<LogsPanel lines={[]} loading />);
    expect(screen.getByTestId('logs-panel')).toHaveTextContent('Loading output…');
    rerender(<LogsPanel lines={[]} />);
    expect(screen.getByTestId('logs-panel')).toHaveTextContent('No output yet.');
  });

  it('follows new lines while at the bottom, and stops when scrolled up', () => {
    const { rerender } = render(<LogsPanel lines={['1']} />);
    const panel = screen.getByTestId('logs-panel');

    fakeLayout(panel, 500);
    rerender(<LogsPanel lines={['1', '2']} />);
    expect(panel.scrollTop).toBe(500);

    // The reader scrolls up: no more following.
    panel.scrollTop = 100;
    fireEvent.scroll(panel);
    fakeLayout(panel, 800);
    rerender(<LogsPanel lines={['1', '2', '3']} />);
    expect(panel.scrollTop).toBe(100);

    // "Follow" jumps back to the end and follows again.
    fireEvent.click(screen.getByTestId('logs-follow'));
    expect(panel.scrollTop).toBe(800);
    fakeLayout(panel, 900);
    rerender(<LogsPanel lines={['1', '2', '3', '4']} />);
    expect(panel.scrollTop).toBe(900);
  });

  it('shows a history error and offers clear', () => {
    const onClear = vi.fn();
    render(<LogsPanel lines={['x']} error="HTTP 500" onClear={onClear} />);
    expect(screen.getByTestId('logs-error')).toHaveTextContent('HTTP 500');
    fireEvent.click(screen.getByRole('button', { name: 'Clear' }));
    expect(onClear).toHaveBeenCalled();
  });
});

describe('LogsPanel of a model', () => {
  it('says whose output it shows', () => {
    render(<LogsPanel lines={['x']} model="beta" />);
    expect(screen.getByTestId('logs-model')).toHaveTextContent('beta');
    expect(screen.getByRole('log', { name: 'llama-server output of beta' })).toHaveTextContent('x');
  });
});
