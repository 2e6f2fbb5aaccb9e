-- Paces each wrk connection so the whole run offers about RATE requests per second
-- (set through the environment). wrk stays closed-loop: see docs/benchmarks.md.
local rate = tonumber(os.getenv("RATE") or "2000")
local connections = tonumber(os.getenv("CONNECTIONS") or "16")
local pause_ms = connections * 1000 / rate

function delay()
  return pause_ms
end
