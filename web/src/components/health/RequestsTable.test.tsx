import { render, screen, within } from '@testing-library/react';
import userEvent from '@testing-library/user-event';
import { describe, expect, it } from 'vitest';
import { historyFixture, NOW_S, requestRow } from '../../test/history';
import { RequestsTable } from './RequestsTable';

const rows = () => screen.queryAllByTestId('request-row');

describe('RequestsTable', () => {
  it('lists the requests newest first, with status, latency, tokens and speed', () => {
    render(<RequestsTable requests={historyFixture().requests} modelIds={['a', 'b']} nowMs={NOW_S * 1000} />);
    expect(rows().map((r) => r.getAttribute('data-status-class'))).toEqual(['none', '2xx', '5xx', '2xx']);
    const [left, b, failed] = rows().map((r) => within(r));
    expect(left?.getByTestId('request-status')).toHaveTextContent(/^none$/);
    expect(b?.getByTestId('request-model')).toHaveTextContent(/^b$/);
    expect(failed?.getByTestId('request-status')).toHaveTextContent(/^503$/);
    expect(failed?.getByText('queue full')).toBeInTheDocument();
    const cells = within(rows()[3] as HTMLElement).getAllByRole('cell').map((c) => c.textContent);
    expect(cells).toContain('203 ms');
    expect(cells).toContain('20 → 16');
    expect(cells).toContain('1500 tok/s');
  });

  it('filters by model and by status class', async () => {
    const user = userEvent.setup();
    render(<RequestsTable requests={historyFixture().requests} modelIds={['a', 'b', 'c']} nowMs={NOW_S * 1000} />);
    const model = screen.getByTestId('requests-filter-model');
    expect(within(model).getAllByRole('option').map((o) => o.textContent)).toEqual(['all models', 'a', 'b', 'c']);
    await user.selectOptions(model, 'b');
    expect(rows().map((r) => r.getAttribute('data-model'))).toEqual(['b']);

    await user.selectOptions(model, 'a');
    const status = screen.getByTestId('requests-filter-status');
    await user.selectOptions(status, '5xx');
    expect(rows().map((r) => r.getAttribute('data-status-class'))).toEqual(['5xx']);
    await user.selectOptions(status, 'none');
    expect(rows().map((r) => r.getAttribute('data-status-class'))).toEqual(['none']);
    await user.selectOptions(status, '4xx');
    expect(rows()).toHaveLength(0);
    expect(screen.getByTestId('requests-empty')).toHaveTextContent('No request matches these filters.');

    await user.selectOptions(model, '');
    await user.selectOptions(status, '');
    expect(rows()).toHaveLength(4);
  });

  it('pages through many requests, and goes back to the first page when a filter changes', async () => {
    const user = userEvent.setup();
    const many = Array.from({ length: 23 }, (_, i) => requestRow({ at: NOW_S - i, model: i % 2 ? 'b' : 'a' }));
    render(<RequestsTable requests={many} modelIds={['a', 'b']} nowMs={NOW_S * 1000} rowsPerPage={10} />);
    expect(rows()).toHaveLength(10);
    expect(screen.getByText('1–10 of 23')).toBeInTheDocument();
    await user.click(screen.getByRole('button', { name: 'Go to next page' }));
    await user.click(screen.getByRole('button', { name: 'Go to next page' }));
    expect(rows()).toHaveLength(3);
    await user.selectOptions(screen.getByTestId('requests-filter-model'), 'b');
    expect(screen.getByText('1–10 of 11')).toBeInTheDocument();
  });

  it('says so when nothing was recorded', () => {
    render(<RequestsTable requests={[]} modelIds={['a']} nowMs={NOW_S * 1000} />);
    expect(screen.getByTestId('requests-empty')).toHaveTextContent('No requests recorded yet.');
    expect(screen.queryByTestId('requests-table')).not.toBeInTheDocument();
  });
});
