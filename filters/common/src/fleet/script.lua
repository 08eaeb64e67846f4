-- The fleet checks of one request, run atomically by Redis (see fleet/wire.rs).
-- ARGV[1] is the call's id, which the reply starts with, so a caller can tell
-- its own answer from another call's (a proxy may mix them up). The rest of
-- ARGV is a list of operations, KEYS their keys in the same order:
--   'n', ttl_ms                       nonce: SET key NX PX ttl_ms; KEYS: the nonce
--   'g', m, then m rules of 8 values  quota group; each rule:
--       algorithm ('f' fixed | 's' sliding), limit, window_ms, left_ms, ttl_ms,
--       dry_run ('0' | '1'), lease units, lease holders; KEYS: the current
--       window's counter, and for sliding also the previous window's. A fixed
--       rule that counts the request counts min(units, max(1, left / holders))
--       at once, never past the limit: a lease the caller admits from (1
--       unit, the request's, without a lease)
--   'r', version, value, ttl_ms, first   record: a versioned value (a
--       breaker's state) in a hash {v, r}, written only when its version is
--       still `version` (0: absent) and `value` is not '-' (a read); a new
--       record starts at version `first`, a random number from the caller,
--       so a record that expired and is made again never repeats a version
--       an Envoy still holds (versions stay below 2^53); KEYS: the record
-- After the id, the reply has three values per nonce, per rule and per record:
--   nonce:  state, 0, 0; 1 fresh (recorded), 0 replayed, -1 not run
--   rule:   state, previous (a fixed rule: the units counted), current;
--           1 counted, 0 over its limit, 2 over its
--           limit in dry run, 3 within its limit but not counted (another rule
--           of the group refused the request), -1 not run
--   record: state, version, value; 1 written (the value is ''), 0 not
--           written (the value is the stored one, or '' when its version is
--           the one sent), -1 not run
-- Nothing runs after a replayed nonce or a refused quota group.
-- A rule admits while previous * left + (current + 1) * window <= limit * window
-- (the sliding estimate in integers); fixed windows are sent with window 1 and
-- left 0, so for them that is current < limit.
local out, k, a = { ARGV[1] }, 1, 2
local stopped = false
local function push(state, previous, current)
  out[#out + 1] = state
  out[#out + 1] = previous
  out[#out + 1] = current
end
while a <= #ARGV do
  local kind = ARGV[a]
  if kind == 'n' then
    local ttl = ARGV[a + 1]
    a = a + 2
    if stopped then
      push(-1, 0, 0)
    elseif redis.call('SET', KEYS[k], '1', 'NX', 'PX', ttl) then
      push(1, 0, 0)
    else
      push(0, 0, 0)
      stopped = true
    end
    k = k + 1
  elseif kind == 'g' then
    local m = tonumber(ARGV[a + 1])
    a = a + 2
    local rules, refused = {}, false
    for j = 1, m do
      local rule = {
        sliding = ARGV[a] == 's',
        limit = tonumber(ARGV[a + 1]),
        window = tonumber(ARGV[a + 2]),
        left = tonumber(ARGV[a + 3]),
        ttl = ARGV[a + 4],
        dry = ARGV[a + 5] == '1',
        units = tonumber(ARGV[a + 6]),
        holders = tonumber(ARGV[a + 7]),
        key = KEYS[k],
        previous = 0,
        current = 0,
      }
      a = a + 8
      k = k + 1
      if rule.sliding then
        rule.previous_key = KEYS[k]
        k = k + 1
      end
      if not stopped then
        rule.current = tonumber(redis.call('GET', rule.key) or '0')
        if rule.sliding then
          rule.previous = tonumber(redis.call('GET', rule.previous_key) or '0')
        end
        rule.admits = rule.previous * rule.left + (rule.current + 1) * rule.window
          <= rule.limit * rule.window
        if not rule.admits and not rule.dry then
          refused = true
        end
      end
      rules[j] = rule
    end
    for j = 1, m do
      local rule = rules[j]
      if stopped then
        push(-1, 0, 0)
      elseif not rule.admits then
        push(rule.dry and 2 or 0, rule.previous, rule.current)
      elseif refused then
        push(3, rule.previous, rule.current)
      else
        local counted, current = 1, 0
        if not rule.sliding and rule.units > 1 then
          local left = rule.limit - rule.current
          counted = math.max(1, math.min(rule.units, math.floor(left / rule.holders), left))
          current = redis.call('INCRBY', rule.key, counted)
        else
          current = redis.call('INCR', rule.key)
        end
        if current == counted then
          redis.call('PEXPIRE', rule.key, rule.ttl)
        end
        if rule.sliding then
          push(1, rule.previous, current)
        else
          push(1, counted, current)
        end
      end
    end
    if refused then
      stopped = true
    end
  elseif kind == 'r' then
    local expected, value, ttl, first = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4]
    a = a + 5
    if stopped then
      push(-1, 0, '')
    else
      local stored = redis.call('HMGET', KEYS[k], 'v', 'r')
      local version = tonumber(stored[1]) or 0
      if value ~= '-' and version == tonumber(expected) then
        if version == 0 then
          version = tonumber(first)
        else
          version = version + 1
        end
        -- As text: Lua would write a large number in exponent notation.
        redis.call('HSET', KEYS[k], 'v', string.format('%.0f', version), 'r', value)
        redis.call('PEXPIRE', KEYS[k], ttl)
        push(1, version, '')
      elseif version == tonumber(expected) then
        push(0, version, '')
      else
        push(0, version, stored[2] or '')
      end
    end
    k = k + 1
  else
    return redis.error_reply('gateway fleet script: unknown operation ' .. tostring(kind))
  end
end
return out
