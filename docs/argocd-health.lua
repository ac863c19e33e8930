-- Argo CD health check for modelrollout.io/ModelRollout (docs/gitops.md).
--
-- Install it under `resource.customizations.health.modelrollout.io_ModelRollout`
-- in the argocd-cm ConfigMap. It reads only what the operator writes:
--
--   status.observedGeneration < metadata.generation  -> Progressing
--       (the operator has not seen the latest spec yet; whatever the status
--       says is about an older spec)
--   Succeeded                                         -> Healthy
--   Paused                                            -> Suspended
--       (a pause step, a human gate, a pause request or an inconclusive
--       analysis: someone has to act)
--   RolledBack, Failed                                -> Degraded
--   anything else (Pending, Shadowing, Progressing,
--   Promoting, no status yet)                         -> Progressing
--
-- Argo CD runs custom health checks in a sandbox with only Lua's base and
-- table libraries (no string, no math), on Lua 5.1 (gopher-lua). This script
-- uses nothing else: `..`, tostring, ipairs. Numbers are floats there;
-- tostring prints whole ones without a decimal point.

local hs = {}

local function condition(status, kind)
  if type(status.conditions) ~= "table" then
    return nil
  end
  for _, c in ipairs(status.conditions) do
    if type(c) == "table" and c.type == kind then
      return c
    end
  end
  return nil
end

local function nonempty(text)
  return type(text) == "string" and text ~= ""
end

local status = obj.status
if type(status) ~= "table" or status.phase == nil then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to pick up the rollout"
  return hs
end

local generation = nil
if type(obj.metadata) == "table" then
  generation = obj.metadata.generation
end
local observed = status.observedGeneration
if generation ~= nil and (observed == nil or observed < generation) then
  hs.status = "Progressing"
  hs.message = "Waiting for the operator to see generation " .. tostring(generation)
  return hs
end

local phase = status.phase
local message = status.message
if not nonempty(message) then
  local ready = condition(status, "Ready")
  if ready ~= nil and nonempty(ready.message) then
    message = ready.message
  end
end
-- A route the operator cannot read or write holds the rollout where it is;
-- say so rather than leave the reader guessing.
local traffic = condition(status, "TrafficInSync")
if traffic ~= nil and traffic.status == "False" and traffic.reason == "RouteUnavailable" then
  if nonempty(traffic.message) then
    message = "route unavailable: " .. traffic.message
  else
    message = "route unavailable"
  end
end

local text = phase
if nonempty(message) then
  text = phase .. ": " .. message
end

if phase == "Succeeded" then
  hs.status = "Healthy"
elseif phase == "Paused" then
  hs.status = "Suspended"
  if nonempty(status.awaitingApproval) then
    text = text .. " (awaiting approval: " .. status.awaitingApproval .. ")"
  end
elseif phase == "RolledBack" or phase == "Failed" then
  hs.status = "Degraded"
else
  hs.status = "Progressing"
  local weights = status.weights
  if nonempty(status.candidateVersion) and type(weights) == "table" and weights.candidate ~= nil then
    text = text .. " (" .. status.candidateVersion .. " at " .. tostring(weights.candidate) .. "%"
    if status.mirrorPercent ~= nil and status.mirrorPercent > 0 then
      text = text .. ", " .. tostring(status.mirrorPercent) .. "% mirrored"
    end
    text = text .. ")"
  end
end
hs.message = text
return hs
