import { useSyncExternalStore } from 'react';
import { apiKeyStore, type ApiKeyState, type ApiKeyStore } from '../lib/apiKey';

/** The tab's API key and its standing refusal, re-rendering on every change. */
export function useApiKey(keys: ApiKeyStore = apiKeyStore): ApiKeyState {
  return useSyncExternalStore(keys.subscribe, keys.snapshot);
}
