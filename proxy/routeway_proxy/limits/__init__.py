"""Request and token limits (issue 13, "Limits"): the engine; `pipeline/limit.py`
puts it on the request path.

Modules, from pure to I/O:

- `budget`   the algorithm: one budget per (key, kind), reserve and settle, all-or-nothing over
             several limits, retry-after and OpenAI's reset format (pure, the clock passed in)
- `estimate` the tokens a request is charged before it is sent (pure)
- `headers`  OpenAI's `x-ratelimit-*` headers and `Retry-After` from a decision (pure)
- `local`    the store of one process (a dict)
- `shared`   the store of one process group: a fixed-size table in a shared file, under flock
- `redis_store` the store of many pods: the same semantics as atomic Lua scripts in Redis
- `limiter`  what the `limit` and `settle` stages call: estimate, reserve, settle, per-pod shares
- `metrics`  the Prometheus families (defined here, registered by whoever wires them)
- `answer`   the 429 (or 503 when failing closed) a refused request gets
- `wiring`   a process's limiter: which store, rebuilt on config change, closed at shutdown
"""
