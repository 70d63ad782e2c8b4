"""The request path of an inference request, one stage per module, in this order:

1. `admit`        parse and admit: body size limit, the fields routing needs, the model's route
2. `authenticate` who is calling: a `Caller` (gateway key, ModelClient, or an open gateway's),
                  and whether it may call the model
3. `limit`        reserve request and token budgets of a limited route or client
4. `cache`        answer a repeated request from the response cache (routes with `cache`)
5. `choose`       the route's arm (stable or canary) and the order of its targets
6. `attempts`     the driver of the attempts — retries, fallbacks, timeouts — as `policy`
                  (pure, no I/O) decides them
7. `relay`        the upstream's answer to the client: a whole JSON document or an SSE stream
8. `settle`       one accounting record per request, whatever path it took

`handle.py` runs them for each request and is the place to read one request end to end.
"""
