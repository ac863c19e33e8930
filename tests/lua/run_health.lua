-- Run an Argo CD health check on objects read from JSON files, the way Argo CD does.
--
--   lua5.4 tests/lua/run_health.lua docs/argocd-health.lua sample.json [more.json ...]
--
-- Each file holds one Kubernetes object, or {"object": {...}, ...} (the status
-- samples of tests/fixtures/status-samples). For each file one line of JSON is
-- printed: {"file": ..., "status": ..., "message": ...}, or {"file": ...,
-- "error": ...} if the script failed (the exit code is then 1).
--
-- Like Argo CD (util/lua/lua.go) the script runs in a sandbox holding only the
-- base and table libraries and a safe `os` (no string, no math, no io), with
-- the object in the global `obj`, and must return a table. Strings lose their
-- methods ("x"):len() while it runs, as in Argo CD where the string library is
-- not opened. JSON numbers become floats, except whole numbers, which become
-- integers, so that tostring/`..` print them as gopher-lua does ("2", not "2.0").
--
-- No dependency beyond lua5.4 itself: a small JSON decoder is included, so CI
-- needs no lua-cjson.

-- ------------------------------------------------------------------ JSON decoding

local json = {}

local escapes = {
  ['"'] = '"', ["\\"] = "\\", ["/"] = "/",
  b = "\b", f = "\f", n = "\n", r = "\r", t = "\t",
}

local function decode_error(text, pos, what)
  error(string.format("JSON: %s at character %d near %q", what, pos, text:sub(pos, pos + 20)), 0)
end

local function skip(text, pos)
  return text:find("[^ \t\r\n]", pos) or #text + 1
end

local parse_value

local function parse_string(text, pos)
  -- pos is at the opening quote
  local out, i = {}, pos + 1
  while true do
    local c = text:sub(i, i)
    if c == "" then
      decode_error(text, pos, "unterminated string")
    elseif c == '"' then
      return table.concat(out), i + 1
    elseif c == "\\" then
      local e = text:sub(i + 1, i + 1)
      if e == "u" then
        local hex = text:sub(i + 2, i + 5)
        if not hex:match("^%x%x%x%x$") then
          decode_error(text, i, "bad \\u escape")
        end
        local code = tonumber(hex, 16)
        i = i + 6
        if code >= 0xD800 and code <= 0xDBFF and text:sub(i, i + 1) == "\\u" then
          local low = tonumber(text:sub(i + 2, i + 5), 16)
          if low and low >= 0xDC00 and low <= 0xDFFF then
            code = 0x10000 + (code - 0xD800) * 0x400 + (low - 0xDC00)
            i = i + 6
          end
        end
        out[#out + 1] = utf8.char(code)
      elseif escapes[e] then
        out[#out + 1] = escapes[e]
        i = i + 2
      else
        decode_error(text, i, "bad escape")
      end
    else
      local j = text:find('["\\]', i)
      if not j then
        decode_error(text, pos, "unterminated string")
      end
      out[#out + 1] = text:sub(i, j - 1)
      i = j
    end
  end
end

local function parse_number(text, pos)
  local literal = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
  if not literal or literal == "" or literal == "-" then
    decode_error(text, pos, "bad number")
  end
  local n = tonumber(literal)
  if n == nil then
    decode_error(text, pos, "bad number")
  end
  if not literal:find("[.eE]") then
    n = math.tointeger(n) or n
  end
  return n, pos + #literal
end

local function parse_object(text, pos)
  local out = {}
  pos = skip(text, pos + 1)
  if text:sub(pos, pos) == "}" then
    return out, pos + 1
  end
  while true do
    if text:sub(pos, pos) ~= '"' then
      decode_error(text, pos, "expected a key")
    end
    local key
    key, pos = parse_string(text, pos)
    pos = skip(text, pos)
    if text:sub(pos, pos) ~= ":" then
      decode_error(text, pos, "expected ':'")
    end
    local value
    value, pos = parse_value(text, skip(text, pos + 1))
    out[key] = value -- null becomes nil: the key is absent, as in Argo CD
    pos = skip(text, pos)
    local c = text:sub(pos, pos)
    if c == "}" then
      return out, pos + 1
    elseif c ~= "," then
      decode_error(text, pos, "expected ',' or '}'")
    end
    pos = skip(text, pos + 1)
  end
end

local function parse_array(text, pos)
  local out, n = {}, 0
  pos = skip(text, pos + 1)
  if text:sub(pos, pos) == "]" then
    return out, pos + 1
  end
  while true do
    local value
    value, pos = parse_value(text, pos)
    n = n + 1
    out[n] = value
    pos = skip(text, pos)
    local c = text:sub(pos, pos)
    if c == "]" then
      return out, pos + 1
    elseif c ~= "," then
      decode_error(text, pos, "expected ',' or ']'")
    end
    pos = skip(text, pos + 1)
  end
end

parse_value = function(text, pos)
  pos = skip(text, pos)
  local c = text:sub(pos, pos)
  if c == "{" then
    return parse_object(text, pos)
  elseif c == "[" then
    return parse_array(text, pos)
  elseif c == '"' then
    return parse_string(text, pos)
  elseif c == "-" or c:match("%d") then
    return parse_number(text, pos)
  elseif text:sub(pos, pos + 3) == "true" then
    return true, pos + 4
  elseif text:sub(pos, pos + 4) == "false" then
    return false, pos + 5
  elseif text:sub(pos, pos + 3) == "null" then
    return nil, pos + 4
  end
  decode_error(text, pos, "unexpected character")
end

function json.decode(text)
  local value, pos = parse_value(text, 1)
  pos = skip(text, pos)
  if pos <= #text then
    decode_error(text, pos, "trailing characters")
  end
  return value
end

local function quote(s)
  s = tostring(s)
  s = s:gsub('[%c"\\]', function(c)
    local named = { ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t" }
    return named[c] or string.format("\\u%04x", c:byte())
  end)
  return '"' .. s .. '"'
end

-- ------------------------------------------------------------- the Argo CD sandbox

local function deep_copy(v)
  if type(v) ~= "table" then
    return v
  end
  local out = {}
  for k, x in pairs(v) do
    out[k] = deep_copy(x)
  end
  return out
end

local function sandbox(object)
  local env = {
    assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
    pcall = pcall, select = select, tonumber = tonumber, tostring = tostring,
    type = type, unpack = table.unpack, xpcall = xpcall, print = print,
    table = {
      concat = table.concat, insert = table.insert, remove = table.remove,
      sort = table.sort, unpack = table.unpack,
    },
    -- Argo CD's "safe" os: time functions only.
    os = { clock = os.clock, date = os.date, difftime = os.difftime, time = os.time },
    obj = deep_copy(object),
  }
  env._G = env
  return env
end

local function run(script_path, script_text, object)
  local chunk, err = load(script_text, "@" .. script_path, "t", sandbox(object))
  if not chunk then
    return nil, err
  end
  local string_mt = getmetatable("")
  local string_index = string_mt.__index
  string_mt.__index = nil -- no ("x"):method() in Argo CD's sandbox
  local ok, result = pcall(chunk)
  string_mt.__index = string_index
  if not ok then
    return nil, tostring(result)
  end
  if type(result) ~= "table" then
    return nil, "expect table output from Lua script, not " .. type(result)
  end
  return result
end

local function read(path)
  local f, err = io.open(path, "rb")
  if not f then
    error(err, 0)
  end
  local text = f:read("a")
  f:close()
  return text
end

-- ---------------------------------------------------------------------------- main

local script_path = arg[1]
if not script_path or not arg[2] then
  io.stderr:write("usage: lua5.4 run_health.lua HEALTH.lua OBJECT.json [OBJECT.json ...]\n")
  os.exit(2)
end
local script_text = read(script_path)
local failed = false
for i = 2, #arg do
  local path = arg[i]
  local ok, doc = pcall(function()
    return json.decode(read(path))
  end)
  local result, err
  if not ok then
    err = doc
  else
    local object = doc
    if type(doc) == "table" and type(doc.object) == "table" then
      object = doc.object
    end
    result, err = run(script_path, script_text, object)
  end
  if result then
    print(string.format(
      '{"file": %s, "status": %s, "message": %s}',
      quote(path), quote(result.status), quote(result.message or "")
    ))
  else
    failed = true
    print(string.format('{"file": %s, "error": %s}', quote(path), quote(err)))
  end
end
os.exit(failed and 1 or 0)
