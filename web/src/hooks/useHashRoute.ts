import { useEffect, useState } from 'react';

/** The dashboard's views: the status page (the default) and the health page. */
export type View = 'status' | 'health';

export interface Route {
  view: View;
  /**
   * The model the view details, or null: `#/health/<model>`, or `#/status/<model>` (the status
   * card and the logs show that model's server instead of the primary model's).
   */
  model: string | null;
}

/** `%xx`-decoded, or null when it is not (a malformed address must not break the page). */
function decoded(part: string | undefined): string | null {
  if (!part) return null;
  try {
    return decodeURIComponent(part);
  } catch {
    return null;
  }
}

/** `#/health`, `#/health/<model id>` or `#/status/<model id>`; anything else is the status view. */
export function parseHash(hash: string): Route {
  const path = hash.replace(/^#/, '');
  const match = /^\/(health|status)(?:\/([^/]+))?\/?$/.exec(path);
  if (!match) return { view: 'status', model: null };
  return { view: match[1] as View, model: decoded(match[2]) };
}

/** The hash of a route (the status view of the primary model is the bare page). */
export function routeHash(route: Route): string {
  if (route.view === 'status') return route.model ? `#/status/${encodeURIComponent(route.model)}` : '#/';
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
