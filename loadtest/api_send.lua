-- wrk script: POST /api/send_message (or /api/publish with MODE=publish),
-- round robin over the (conversation, sender) pairs in PAIRS (one
-- "conversation_id sender_id" line each), with the key in API_KEY.
local pairs_file = os.getenv("PAIRS")
local key = os.getenv("API_KEY")
local mode = os.getenv("MODE") or "send_message"
local targets = {}
for line in io.lines(pairs_file) do
  local c, u = line:match("^(%d+) (%d+)$")
  if c then targets[#targets + 1] = { c, u } end
end
local i = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["X-API-Key"] = key

request = function()
  i = i + 1
  local p = targets[(i % #targets) + 1]
  local body
  if mode == "publish" then
    body = string.format('{"conversation_id":%s,"event":{"type":"bench","n":%d}}', p[1], i)
  else
    body = string.format('{"conversation_id":%s,"sender_id":%s,"content":"api %d"}', p[1], p[2], i)
  end
  return wrk.format(nil, "/api/" .. mode, nil, body)
end

-- wrk prints its own "Non-2xx or 3xx responses" line when there are any.
done = function(summary, latency, requests)
  io.write(string.format("%s: %.0f requests/s, p50 %.2f ms, p99 %.2f ms, %d requests\n",
    mode, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(99) / 1000, summary.requests))
end
