-- wrk script: HTTP/JSON publishes of 256-byte payloads, unique message ids.
-- BATCH (env, default 1): events per request; 1 uses POST /v1/events, more
-- POST /v1/events/batch. Usage (see docs/benchmarks.md):
--   BATCH=100 wrk -t2 -c8 -d10s -s loadtest/http/publish.lua http://127.0.0.1:8080
local batch = tonumber(os.getenv("BATCH") or "1")
-- 256 bytes, base64 (the payload's JSON form).
local payload = string.rep("QUJD", 85) .. "QQ=="
local thread_id = 0
local counter = 0

function setup(thread)
  thread_id = thread_id + 1
  thread:set("tid", thread_id)
end

local function event()
  counter = counter + 1
  return string.format('{"topic":"bench","message_id":"h%d-%d-%d","payload":"%s"}',
    tid, math.random(1, 1000000000), counter, payload)
end

request = function()
  if batch == 1 then
    return wrk.format("POST", "/v1/events", {["Content-Type"] = "application/json"}, event())
  end
  local parts = {}
  for i = 1, batch do
    parts[i] = event()
  end
  local body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  return wrk.format("POST", "/v1/events/batch", {["Content-Type"] = "application/json"}, body)
end

response = function(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. ": " .. body .. "\n")
  end
end
