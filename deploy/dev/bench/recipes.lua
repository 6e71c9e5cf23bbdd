-- wrk script for `make bench-api`. BENCH_SCENARIO: by-id | by-ingredient | write-mix |
-- write-mix-keyed (the same writes, each with a fresh Idempotency-Key).
-- BENCH_RECIPES / BENCH_INGREDIENTS: id ranges; BENCH_TOKEN: bearer token for writes.
-- done() prints one line `WRK_JSON {...}` that deploy/dev/bench-api.sh parses.
local scenario = os.getenv("BENCH_SCENARIO") or "by-id"
local recipes = tonumber(os.getenv("BENCH_RECIPES") or "10000")
local ingredients = tonumber(os.getenv("BENCH_INGREDIENTS") or "500")
local token = os.getenv("BENCH_TOKEN") or ""
local counter = 0

function setup(thread)
  counter = counter + 1
  thread:set("tid", counter)
end

-- GET requests are formatted once, in init(): formatting each request in Lua costs wrk CPU,
-- and wrk shares the machine's two cores with the service it measures.
local prebuilt = nil

function init(args)
  math.randomseed(os.time() * 1000 + (tid or 0) * 7919)
  if scenario == "by-id" or scenario == "by-ingredient" then
    prebuilt = {}
    for i = 1, 8192 do
      if scenario == "by-id" then
        prebuilt[i] = wrk.format("GET", "/v1/recipes/" .. math.random(1, recipes))
      else
        prebuilt[i] = wrk.format("GET", "/v1/recipes?ingredient_id=" .. math.random(1, ingredients))
      end
    end
  end
end

local function recipe_body()
  local seen, items = {}, {}
  while #items < 8 do
    local id = math.random(1, ingredients)
    if not seen[id] then
      seen[id] = true
      items[#items + 1] = string.format('{"ingredient_id":%d,"quantity":125.5,"unit":"g"}', id)
    end
  end
  return string.format('{"title":"Bench recipe %d","description":"Written by the benchmark","servings":4,"ingredients":[%s]}',
    math.random(1, 100000), table.concat(items, ","))
end

local json_headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
local patch_headers = { ["Content-Type"] = "application/merge-patch+json", ["Authorization"] = "Bearer " .. token }
local sent = 0

-- With write-mix-keyed, each write carries its own Idempotency-Key.
local function keyed(headers)
  if scenario ~= "write-mix-keyed" then
    return headers
  end
  sent = sent + 1
  local h = {}
  for k, v in pairs(headers) do h[k] = v end
  h["Idempotency-Key"] = string.format("bench-%d-%d-%d", tid or 0, os.time(), sent)
  return h
end

function request()
  if prebuilt then
    return prebuilt[math.random(1, #prebuilt)]
  else
    local roll = math.random(1, 100)
    local id = math.random(1, recipes)
    if roll <= 50 then
      return wrk.format("PATCH", "/v1/recipes/" .. id, keyed(patch_headers), string.format('{"servings":%d}', math.random(1, 100)))
    elseif roll <= 75 then
      return wrk.format("POST", "/v1/recipes", keyed(json_headers), recipe_body())
    else
      return wrk.format("PUT", "/v1/recipes/" .. id, keyed(json_headers), recipe_body())
    end
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format('WRK_JSON {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,"errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.status + e.timeout))
end
