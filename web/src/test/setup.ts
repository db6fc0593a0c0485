import '@testing-library/jest-dom/vitest';
import { cleanup } from '@testing-library/react';
import { afterEach } from 'vitest';
import { apiKeyStore } from '../lib/apiKey';

afterEach(() => {
  cleanup();
  // The page's one key store outlives a test: each test starts with no key and no refusal.
  apiKeyStore.forget();
  sessionStorage.clear();
});
