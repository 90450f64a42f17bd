-- benches/pipeline.lua — wrk script for HTTP/1.1 pipelining (used by benches/plaintext.rs).
-- Sends DEPTH copies of the request back to back in one write, then waits for DEPTH responses;
-- wrk counts each response, so Requests/sec stays comparable with unpipelined runs.
--   wrk -s benches/pipeline.lua http://127.0.0.1:PORT/plaintext -- 16
local request_batch

init = function(args)
  local depth = tonumber(args[1]) or 1
  local batch = {}
  for i = 1, depth do
    batch[i] = wrk.format()
  end
  request_batch = table.concat(batch)
end

request = function()
  return request_batch
end
