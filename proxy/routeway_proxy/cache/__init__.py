"""The response cache of issue 13: exact-match answers per route, in process and in Redis.

Wired into the request path by `pipeline/cache.py` (lookup, and the `CacheTicket` a miss
carries), `pipeline/relay.py` (hands the ticket the answer: a document, or a stream's bytes
before the usage filter), `pipeline/settle.py` (`fill_cache`) and `configure.py` (the caches of
each applied config, the Redis client). Modules, pure ones first:

- `key`      which requests are cacheable; the key (route, scope identity, canonical body)
- `answers`  which answers may be stored; a streamed answer assembled into its document
- `replay`   a stored answer as a JSON document or as an SSE stream
- `control`  the per-request plan (`Cache-Control`), `x-routeway-cache`, what limits charge
- `memory`   the in-process LRU per route (bytes bound, TTL; injected clock)
- `metrics`  the metric families (registered by `configure`)
- `redis_store` the shared tier (I/O: redis-py asyncio, bounded, failing to a miss)
- `tiers`    both tiers behind one object, `ResponseCache`, and `render_hit`
- `configure` `GatewayCache`: the caches and Redis tier of the config a process serves
"""
