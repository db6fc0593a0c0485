import { useEffect, useState } from 'react';
import { createLlamaSocket, keepReconnecting, type LlamaSocket, type SocketFactory } from '../lib/socket';

/**
 * One socket to llamaherd for the whole page, and its only owner: it connects the socket
 * while the calling component is mounted, brings it back when socket.io would give up (see
 * {@link keepReconnecting}), and disconnects it on unmount. Hand it to {@link useLlamaStatus}
 * and {@link useLlamaLogs}, which only listen.
 */
export function useLlamaSocket(url?: string, factory: SocketFactory = createLlamaSocket): LlamaSocket {
  const [socket] = useState(() => factory(url));
  useEffect(() => {
    const stopReconnecting = keepReconnecting(socket);
    socket.connect();
    return () => {
      stopReconnecting();
      socket.disconnect();
    };
  }, [socket]);
  return socket;
}
