import { render, screen, within } from '@testing-library/react';
import { describe, expect, it } from 'vitest';
import type { ConfigInfo, PeerStatus } from '../../types/gateway';
import { ClusterPanel } from './ClusterPanel';

const CONFIG: ConfigInfo = { path: '/etc/llamaherd/config.json', loadedAt: Date.parse('2026-12-07T10:00:00Z'), lastReload: null };

describe('ClusterPanel', () => {
  it('shows nothing without a config or peers', () => {
    const { container } = render(<ClusterPanel config={null} peers={[]} />);
    expect(container).toBeEmptyDOMElement();
  });

  it('says what the last reload changed and what needs a restart', () => {
    const lastReload = { ok: true, at: 1, trigger: 'SIGHUP', changes: ['coder: added'], needsRestart: ['app_port'], error: null };
    render(<ClusterPanel config={{ ...CONFIG, lastReload }} peers={[]} />);
    const alert = screen.getByTestId('last-reload');
    expect(alert).toHaveTextContent('Reloaded (SIGHUP)');
    expect(alert).toHaveTextContent('coder: added');
    expect(alert).toHaveTextContent('needs a restart: app_port');
  });

  it('says why a reload changed nothing', () => {
    const lastReload = { ok: false, at: 1, trigger: 'api', changes: [], needsRestart: [], error: 'models.x.path: not found' };
    render(<ClusterPanel config={{ ...CONFIG, lastReload }} peers={[]} />);
    expect(screen.getByTestId('last-reload')).toHaveTextContent('Not reloaded (api)');
    expect(screen.getByTestId('last-reload')).toHaveTextContent('models.x.path: not found; the config in use stays');
  });

  it('lists every host with its reachability, its models and its problem', () => {
    const peers: PeerStatus[] = [
      { name: 'gpu1', url: 'http://10.0.0.5:3000', reachable: true, problem: null, models: ['coder', 'chat'] },
      { name: 'gpu2', url: 'http://10.0.0.6:3000', reachable: false, problem: 'does not answer', models: [] },
    ];
    render(<ClusterPanel config={null} peers={peers} />);
    const rows = screen.getAllByTestId('peer-row');
    expect(within(rows[0]!).getByTestId('peer-reachable')).toHaveTextContent('reachable');
    expect(rows[0]).toHaveTextContent('coder, chat');
    expect(within(rows[1]!).getByTestId('peer-reachable')).toHaveTextContent('unreachable');
    expect(within(rows[1]!).getByTestId('peer-problem')).toHaveTextContent('does not answer');
  });
});
