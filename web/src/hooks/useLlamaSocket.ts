import { useEffect, useState } from 'react';
import { apiKeyStore, socketAuthProblem, type ApiKeyStore } from '../lib/apiKey';
import { createLlamaSocket, keepReconnecting, type LlamaSocket, type SocketFactory } from '../lib/socket';

/**
 * One socket to llamaherd for the whole page, and its only owner: it connects the socket
 * while the calling component is mounted, brings it back when socket.io would give up (see
 * {@link keepReconnecting}), and disconnects it on unmount. Hand it to {@link useLlamaStatus}
 * and {@link useLlamaLogs}, which only listen.
 *
 * A handshake refused for its API key is reported to `keys` (the page then asks for a key)
 * and not retried: the page makes a new socket once it has a new key.
 */
export function useLlamaSocket(
  url?: string,
  factory: SocketFactory = createLlamaSocket,
  keys: ApiKeyStore = apiKeyStore,
): LlamaSocket {
  const [socket] = useState(() => factory(url));
  useEffect(() => {
    const refusal = (err: unknown) => socketAuthProblem(err, socket.active, keys.key);
    const stopReconnecting = keepReconnecting(socket, (err) => refusal(err) !== null);
    const onConnectError = (err?: unknown) => {
      const problem = refusal(err);
      if (problem) keys.refused(problem, keys.key);
    };
    socket.on('connect_error', onConnectError);
    socket.connect();
    return () => {
      stopReconnecting();
      socket.off('connect_error', onConnectError);
      socket.disconnect();
    };
  }, [socket, keys]);
  return socket;
}
