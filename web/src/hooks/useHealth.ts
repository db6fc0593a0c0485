import { useEffect, useState } from 'react';
import { getHealth, type FetchLike } from '../api/client';
import type { HealthInfo } from '../types/llama';

/** `GET /healthz`, fetched on mount and again whenever `refreshKey` changes. */
export function useHealth(refreshKey: unknown = 0, fetchImpl?: FetchLike): HealthInfo | null {
  const [health, setHealth] = useState<HealthInfo | null>(null);
  useEffect(() => {
    let cancelled = false;
    getHealth(fetchImpl).then(
      (h) => {
        if (!cancelled) setHealth(h);
      },
      () => {
        /* the unreachable banner covers it */
      },
    );
    return () => {
      cancelled = true;
    };
  }, [refreshKey, fetchImpl]);
  return health;
}
