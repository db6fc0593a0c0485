"""Many machines: a llamaherd that serves other llamaherds' models beside its own.

Every llamaherd can be a worker; one that lists `peers` (or finds them through `peers_dns`) is
also a front. Workers stay the authority on their models (they load, queue, evict and refuse);
a front keeps nothing that matters: it follows each peer's live `llamaModels` feed
(peers.py), ranks the replicas of a model by those facts (routing.py), and forwards a request
to the best one, trying the next only when the request cannot have reached a llama-server
(front.py). A forwarded request carries a hop header and is never forwarded again.
"""
