import { useEffect, useState } from 'react';
import { createLlamaSocket, type LlamaSocket, type SocketFactory } from '../lib/socket';

/**
 * One socket to llamaherd for the whole page, connected while the calling
 * component is mounted; pass it to {@link useLlamaStatus} and {@link useLlamaLogs}.
 */
export function useLlamaSocket(url?: string, factory: SocketFactory = createLlamaSocket): LlamaSocket {
  const [socket] = useState(() => factory(url));
  useEffect(() => {
    socket.connect();
    return () => {
      socket.disconnect();
    };
  }, [socket]);
  return socket;
}
