-- wrk script for the single-use refresh row (bench/run.sh `jwt-refresh-chain`).
--
-- Simple JWT clients refresh with the refresh token they got last; with rotation and
-- blacklisting (restguard's default) each token works once, and presenting it again revokes
-- its family. So every wrk thread (one connection each: run with -t N -c N) owns one chain:
-- it starts from its own refresh token, read from the file named by the first script
-- argument (one token per line), and sends the token each answer returns. Chains do not
-- carry over to another run (a request cut off at the end consumed its token unseen), so
-- bench/run.sh logs in afresh before each run. The summary is written as oha-style JSON to
-- the second argument, for bench/run.sh.
--
-- usage: wrk -t16 -c16 -d10s -s refresh_chain.lua URL -- TOKENS_FILE SUMMARY_JSON

local threads = {}

local function read_tokens(path)
  local tokens = {}
  for line in io.lines(path) do
    if line ~= "" then tokens[#tokens + 1] = line end
  end
  return tokens
end

function setup(thread)
  -- Runs in the main state, once per thread, before the thread's init.
  threads[#threads + 1] = thread
  thread:set("id", #threads)
end

function init(args)
  tokens_file, summary_file = args[1], args[2]
  local tokens = read_tokens(tokens_file)
  refresh = tokens[id] or error("no refresh token for thread " .. tostring(id))
end

function request()
  return wrk.format("POST", nil, { ["Content-Type"] = "application/x-www-form-urlencoded" },
    "refresh=" .. refresh)
end

function response(status, headers, body)
  if status == 200 then
    local next_token = body:match('"refresh"%s*:%s*"([^"]+)"')
    -- Without one the same token goes again, and the next answer counts as an error.
    if next_token then refresh = next_token end
  end
end

function done(summary, latency, requests)
  local bad = summary.errors.status
  local sockets = summary.errors.connect + summary.errors.read + summary.errors.write
    + summary.errors.timeout
  local json = string.format(
    '{"summary":{"total":%.6f},"statusCodeDistribution":{"200":%d%s},' ..
    '"errorDistribution":{%s},"latencyPercentiles":{"p50":%.6f,"p99":%.6f}}',
    summary.duration / 1e6, summary.requests - bad - sockets,
    bad > 0 and string.format(',"non-2xx":%d', bad) or "",
    sockets > 0 and string.format('"socket errors":%d', sockets) or "",
    latency:percentile(50) / 1e6, latency:percentile(99) / 1e6)
  local s = assert(io.open(threads[1]:get("summary_file"), "w"))
  s:write(json)
  s:close()
end
