"""The response cache of issue 13: exact-match answers per route, in process and in Redis.

Not wired into the request path yet; the seams are `pipeline/cache.py` (lookup) and
`pipeline/settle.py` (fill). Modules, pure ones first:

- `key`      which requests are cacheable; the key (route, scope identity, canonical body)
- `answers`  which answers may be stored; a streamed answer assembled into its document
- `replay`   a stored answer as a JSON document or as an SSE stream
- `control`  the per-request plan (`Cache-Control`), `x-routeway-cache`, what limits charge
- `memory`   the in-process LRU per route (bytes bound, TTL; injected clock)
- `metrics`  the metric families (defined, not registered)
- `redis_store` the shared tier (I/O: redis-py asyncio, bounded, failing to a miss)
- `tiers`    both tiers behind one object, `ResponseCache`, and `render_hit`

Wiring, once `ModelRoute.spec.cache` reaches the `ProxyConfig` (a sketch; names of the
route's config fields are the schema's to decide):

    # on each config apply (runtime): route id -> CacheSettings(ttl, max_bytes, scope)
    response_cache.configure({r.id: CacheSettings(...) for r in routes if r.config.cache})

    # pipeline/cache.py, after limit.reserve (the seam becomes async)
    settings = response_cache.settings(route.id)
    if settings is None: return None, None                      # route without a cache
    plan = plan_request(settings, route.id, kind, body, client_name,
                        request.headers.get("Cache-Control"))
    hit = await response_cache.lookup(route.id, plan)
    if hit is None: return None, plan                           # header: plan.result_without_hit
    response_cache.count(route.id, "hit", hit)
    body, content_type, headers = render_hit(hit, plan)
    return web.Response(body=body, content_type=content_type, headers=headers), plan

    # relay: a document -> storable_answer(kind, status, body); a stream -> a
    # StreamAssembler(kind, settings.max_bytes) fed every upstream chunk (before the usage
    # filter), result() only after write_eof; then in settle:
    if plan is not None and plan.store and answer is not None:
        response_cache.store(route.id, plan, answer)

    # every answer of a cached route: headers.update(cache_headers(result))
"""
