-- wrk script for benches/load.sh's many-users rows: every request carries the next of N
-- access tokens, in a fixed rotation, so each token comes back exactly every N requests.
--
--   wrk ... -s benches/rotate_tokens.lua URL -- TOKENS_FILE
--
-- The requests are built once in init(): the load generator shares the machine with the
-- proxy under test, so it should spend as little as possible per request.

local requests = {}
local count = 0
local next_index = 0

function init(args)
  local headers = {}
  for name, value in pairs(wrk.headers) do
    headers[name] = value
  end
  for token in io.lines(args[1]) do
    if #token > 0 then
      headers["Authorization"] = "Bearer " .. token
      count = count + 1
      requests[count] = wrk.format(nil, nil, headers)
    end
  end
  if count == 0 then
    error("no tokens in " .. args[1])
  end
  -- Each wrk thread starts at a different place in the rotation.
  next_index = math.random(count) - 1
end

function request()
  next_index = next_index % count + 1
  return requests[next_index]
end
