import { render, screen, within } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import { historyFixture, NOW_S, transition } from '../../test/history';
import { AVAILABILITY_DEFINITION, UptimeCard } from './UptimeCard';

const MODELS = [
  { id: 'a', state: 'ready' },
  { id: 'b', state: 'ready' },
  { id: 'c', state: 'initial' },
];

function rowOf(id: string) {
  const row = screen.getAllByTestId('uptime-row').find((r) => r.getAttribute('data-model-id') === id);
  if (!row) throw new Error(`no uptime row for ${id}`);
  return within(row);
}

const bar = (id: string, name: string) => {
  const found = rowOf(id)
    .getAllByTestId('uptime-bar')
    .find((b) => b.getAttribute('data-window') === name);
  if (!found) throw new Error(`no ${name} bar for ${id}`);
  return within(found);
};

const availabilityOf = (id: string, name: string) =>
  rowOf(id)
    .getAllByTestId('availability')
    .find((a) => a.getAttribute('data-window') === name);

const kinds = (id: string, name: string) => bar(id, name).getAllByTestId('uptime-segment').map((s) => s.getAttribute('data-kind'));

describe('UptimeCard', () => {
  it('draws each model over 24 hours and 7 days, with its availability', () => {
    render(<UptimeCard models={MODELS} transitions={historyFixture().transitions} knownSince={null} now={NOW_S} />);
    expect(screen.getAllByTestId('uptime-row').map((r) => r.getAttribute('data-model-id'))).toEqual(['a', 'b', 'c']);
    expect(kinds('a', '24h')).toEqual(['stopped', 'starting', 'ready', 'crashed', 'starting', 'ready']);
    expect(kinds('a', '7d')).toEqual(['stopped', 'starting', 'ready', 'crashed', 'starting', 'ready']);
    // a: wanted 901 s, ready 300 + 598 s.
    expect(availabilityOf('a', '24h')).toHaveTextContent(/^99\.66%$/);
    expect(availabilityOf('a', '24h')).toHaveAttribute('title', 'ready 14m 58s of 15m 01s wanted');
    expect(availabilityOf('a', '7d')).toHaveTextContent(/^99\.66%$/);
    // b: wanted 301 s, ready 300 s.
    expect(availabilityOf('b', '24h')).toHaveTextContent(/^99\.66%$/);
    // c: never started: all stopped, no figure.
    expect(kinds('c', '24h')).toEqual(['stopped']);
    expect(availabilityOf('c', '24h')).toHaveTextContent(/^—$/);
    expect(availabilityOf('c', '24h')).toHaveAttribute('title', 'not wanted in this window');
  });

  it('places the segments by time across the bar', () => {
    render(<UptimeCard models={MODELS.slice(0, 1)} transitions={historyFixture().transitions} knownSince={null} now={NOW_S} />);
    const [stopped] = bar('a', '24h').getAllByTestId('uptime-segment');
    expect(stopped).toHaveAttribute('data-from', String(NOW_S - 86_400));
    expect(stopped).toHaveAttribute('data-to', String(NOW_S - 901));
    expect(parseFloat(stopped?.style.left ?? '')).toBe(0);
    expect(parseFloat(stopped?.style.width ?? '')).toBeCloseTo(((86_400 - 901) / 86_400) * 100, 3);
    const last = bar('a', '24h').getAllByTestId('uptime-segment').at(-1);
    expect(parseFloat(last?.style.left ?? '') + parseFloat(last?.style.width ?? '')).toBeCloseTo(100, 3);
  });

  it('marks each restart with its exit, on both bars, and counts those of 24 hours', () => {
    const transitions = [
      ...historyFixture().transitions,
      transition({ at: NOW_S - 3 * 86_400, from: 'ready', to: 'crashed', exitCode: 1 }),
      transition({ at: NOW_S - 3 * 86_400 + 1, from: 'crashed', to: 'starting' }),
      transition({ at: NOW_S - 3 * 86_400 + 2, from: 'starting', to: 'ready' }),
    ];
    render(<UptimeCard models={MODELS} transitions={transitions} knownSince={null} now={NOW_S} />);
    const day = bar('a', '24h').getAllByTestId('restart-marker');
    expect(day.map((m) => m.getAttribute('data-exit'))).toEqual(['killed by SIGKILL']);
    expect(day[0]).toHaveAccessibleName(/^restart at .*: killed by SIGKILL$/);
    const week = bar('a', '7d').getAllByTestId('restart-marker');
    expect(week.map((m) => m.getAttribute('data-exit'))).toEqual(['exit code 1', 'killed by SIGKILL']);
    expect(rowOf('a').getByTestId('restart-count')).toHaveTextContent('1 restart in 24 h');
    expect(rowOf('b').getByTestId('restart-count')).toHaveTextContent('0 restarts in 24 h');
    expect(rowOf('b').queryAllByTestId('restart-marker')).toHaveLength(0);
  });

  it('uses the live state of a model whose history holds no transition', () => {
    render(<UptimeCard models={[{ id: 'z', state: 'ready' }]} transitions={[]} knownSince={null} now={NOW_S} />);
    expect(kinds('z', '7d')).toEqual(['ready']);
    expect(availabilityOf('z', '7d')).toHaveTextContent(/^100%$/);
  });

  it('shows what came before a cut list as no record', () => {
    render(<UptimeCard models={MODELS.slice(0, 1)} transitions={historyFixture().transitions} knownSince={NOW_S - 600} now={NOW_S} />);
    expect(kinds('a', '24h')[0]).toBe('unknown');
  });

  it('has a legend that names every colour and defines availability', () => {
    render(<UptimeCard models={MODELS} transitions={[]} knownSince={null} now={NOW_S} />);
    const legend = within(screen.getByTestId('uptime-legend'));
    for (const label of ['ready', 'starting', 'crashed', 'error', 'stopped', 'no record', 'restart']) {
      expect(legend.getByText(label)).toBeInTheDocument();
    }
    expect(screen.getByTestId('availability-definition')).toHaveTextContent(AVAILABILITY_DEFINITION);
  });
});
