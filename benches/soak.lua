-- wrk script of benches/soak.py: POST /invocations with the bodies of a file (one body per
-- line of it, `\n` written as the two characters \n), a larger body every `every`-th
-- request when a second file is given, and a count of every status seen.
--   wrk ... -s soak.lua URL -- BODIES_FILE [BIG_BODY_FILE EVERY]
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

local function read_bodies(path)
  local out = {}
  for line in io.lines(path) do
    out[#out + 1] = line:gsub("\\n", "\n")
  end
  return out
end

function init(args)
  statuses = {}
  bodies = read_bodies(args[1])
  big = args[2] and read_bodies(args[2])[1] or nil
  every = tonumber(args[3] or "0")
  n = 0
end

function request()
  n = n + 1
  local body
  if big and every > 0 and n % every == 0 then
    body = big
  else
    body = bodies[(n % #bodies) + 1]
  end
  return wrk.format("POST", "/invocations", { ["Content-Type"] = "text/csv" }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    for k, v in pairs(s) do
      total[k] = (total[k] or 0) + v
    end
  end
  for k, v in pairs(total) do
    io.write(string.format("status %d %d\n", k, v))
  end
  io.write(string.format("latency p50_us %d p99_us %d max_us %d\n",
    latency:percentile(50), latency:percentile(99), latency.max))
  io.write(string.format("errors connect %d read %d write %d timeout %d\n",
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout))
end
