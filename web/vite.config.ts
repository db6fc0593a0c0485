import react from '@vitejs/plugin-react';
import { defineConfig } from 'vitest/config';

// llamaherd (`llamaherd serve`) listens here during development.
const LLAMAHERD = 'http://127.0.0.1:3000';

export default defineConfig({
  // The Python app serves index.html at `/` and the bundle at `/assets/...`.
  base: '/',
  plugins: [react()],
  build: {
    outDir: '../src/llamaherd/static',
    emptyOutDir: true,
    sourcemap: false,
    target: 'es2022',
    chunkSizeWarningLimit: 700,
  },
  server: {
    host: '127.0.0.1',
    port: 5173,
    // No changeOrigin: llamaherd's Socket.IO accepts same-origin connections only, so the
    // Host header must keep matching the page's Origin (the dev server's).
    proxy: {
      '/api': { target: LLAMAHERD },
      // The gateway's inference paths (the playground streams from /v1/chat/completions).
      '/v1': { target: LLAMAHERD },
      '/healthz': { target: LLAMAHERD },
      '/socket.io': { target: LLAMAHERD, ws: true },
    },
  },
  preview: {
    host: '127.0.0.1',
  },
  test: {
    environment: 'jsdom',
    setupFiles: ['./src/test/setup.ts'],
    include: ['src/**/*.test.{ts,tsx}'],
    css: false,
    restoreMocks: true,
    unstubGlobals: true,
  },
});
