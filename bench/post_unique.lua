-- wrk script: POST one non-streaming chat completion per request, each with a prompt no earlier
-- request had (a counter per wrk thread and connection), so a route with a response cache misses
-- every time and stores every answer. Prints the same JSON summary as post.lua.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer sk-bench"

local counter = 0
-- a fresh salt per wrk run (math.random is not seeded: every run would repeat the same prompts
-- and later rounds would hit what earlier ones stored)
local urandom = io.open("/dev/urandom", "rb")
local salt = urandom:read(8):gsub(".", function(c) return string.format("%02x", c:byte()) end)
urandom:close()

request = function()
  counter = counter + 1
  local body = '{"model":"bench","messages":[{"role":"user","content":"Say something short ' ..
    salt .. '-' .. counter .. '."}],"max_tokens":16}'
  return wrk.format(nil, nil, nil, body)
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,' ..
    '"mean_us":%.1f,"max_us":%d,"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max, e.connect, e.read, e.write, e.status, e.timeout))
end
