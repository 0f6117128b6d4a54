-- wrk: GET /users/<n>, n counting up, so routes carry ids and one in 20
-- requests is a 500 (bench/overhead/service.cjs).
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/users/" .. n)
end
