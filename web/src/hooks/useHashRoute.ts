import { useEffect, useState } from 'react';

/** The dashboard's views: the status page (the default) and the health page. */
export type View = 'status' | 'health';

export interface Route {
  view: View;
  /** `#/health/<model>`: the model the health page details, or null. */
  model: string | null;
}

/** `#/health` or `#/health/<model id>`; anything else is the status view. */
export function parseHash(hash: string): Route {
  const path = hash.replace(/^#/, '');
  const match = /^\/health(?:\/(.+))?\/?$/.exec(path);
  if (!match) return { view: 'status', model: null };
  const model = match[1] ? decodeURIComponent(match[1]) : null;
  return { view: 'health', model };
}

/** The hash of a route (the status view is the bare page). */
export function routeHash(route: Route): string {
  if (route.view === 'status') return '#/';
  return route.model ? `#/health/${encodeURIComponent(route.model)}` : '#/health';
}

/** The route in `location.hash`, followed as it changes (links, back and forward). */
export function useHashRoute(): Route {
  const [route, setRoute] = useState(() => parseHash(window.location.hash));
  useEffect(() => {
    const onChange = () => {
      const next = parseHash(window.location.hash);
      setRoute((r) => (r.view === next.view && r.model === next.model ? r : next));
    };
    window.addEventListener('hashchange', onChange);
    onChange();
    return () => window.removeEventListener('hashchange', onChange);
  }, []);
  return route;
}
