-- Argo CD health check for routeway.dev/v1alpha1 ModelClient.
--
-- Routeway statuses follow kstatus: observedGeneration on the status and on every condition,
-- and the Ready / Reconciling / Stalled trio derived from Accepted (attached to a gateway that
-- requires keys: AuthDisabled otherwise), ResolvedRefs (the key Secret) and Programmed (the
-- gateway's config holding the client is applied) (routeway/status.py in the Routeway
-- source). Clients have no rollouts: no rollout phase.
--
-- BEGIN routeway common (the same text in the ModelGateway, ModelRoute, ModelBackend and
-- ModelClient scripts; tests/chart/test_argocd_health.py checks it). Only Lua's base functions are used:
-- Argo CD runs argocd-cm health scripts without the string, math and io libraries.

local function text(value)
  if value == nil then
    return ""
  end
  return tostring(value)
end

-- "Reason: message", or whichever of the two is set, or `fallback`.
local function explain(condition, fallback)
  local reason, message = text(condition.reason), text(condition.message)
  if reason ~= "" and message ~= "" then
    return reason .. ": " .. message
  end
  if message ~= "" then
    return message
  end
  if reason ~= "" then
    return reason
  end
  return fallback
end

-- The condition's message (the operator already prefixes it with the failing condition's
-- type), else its reason, else `fallback`.
local function describe(condition, fallback)
  if text(condition.message) ~= "" then
    return text(condition.message)
  end
  return explain(condition, fallback)
end

local function prefixed(prefix, condition)
  if condition ~= nil and text(condition.message) ~= "" then
    return prefix .. ": " .. text(condition.message)
  end
  return prefix
end

local function health(status, message)
  return { status = status, message = message }
end

local function isTrue(condition)
  return condition ~= nil and condition.status == "True"
end

local function waitingFor(generation, what)
  return "Waiting for the Routeway operator to observe generation " .. generation .. what
end

-- rolloutPhase: status.rollout.phase of a ModelRoute, nil for the other kinds.
-- healthyMessage(status): what to say when Ready=True.
local function assess(obj, rolloutPhase, healthyMessage)
  local status = obj.status
  if type(status) ~= "table" then
    return health("Progressing", "Waiting for the Routeway operator to report status")
  end

  local generation = nil
  if type(obj.metadata) == "table" then
    generation = tonumber(obj.metadata.generation)
  end
  local observed = tonumber(status.observedGeneration)
  if generation ~= nil and observed ~= generation then
    if observed == nil then
      return health("Progressing", waitingFor(generation, ""))
    end
    return health("Progressing", waitingFor(generation, " (status is for generation " .. observed .. ")"))
  end

  local conditions = {}
  local count = 0
  if type(status.conditions) == "table" then
    for _, condition in ipairs(status.conditions) do
      if type(condition) == "table" and condition.type ~= nil then
        local name = text(condition.type)
        local seen = tonumber(condition.observedGeneration)
        if generation ~= nil and seen ~= nil and seen ~= generation then
          return health("Progressing", waitingFor(generation, " (condition " .. name .. " is for generation " .. seen .. ")"))
        end
        if conditions[name] == nil then
          conditions[name] = condition
          count = count + 1
        end
      end
    end
  end
  if count == 0 then
    return health("Progressing", "Waiting for the Routeway operator to report conditions")
  end

  -- A failure the user has to fix.
  local stalled = conditions["Stalled"]
  if isTrue(stalled) then
    if stalled.reason == "RolledBack" then
      return health("Degraded", prefixed("Rollout rolled back", stalled))
    end
    return health("Degraded", describe(stalled, "Stalled"))
  end
  for _, name in ipairs({ "Accepted", "ResolvedRefs" }) do
    local condition = conditions[name]
    if condition ~= nil and condition.status == "False" then
      return health("Degraded", explain(condition, name .. " is False"))
    end
  end
  local ready = conditions["Ready"]
  if rolloutPhase == "RolledBack" then
    return health("Degraded", prefixed("Rollout rolled back", ready))
  end

  -- Work the operator is still doing, or a rollout waiting to be resumed.
  local reconciling = conditions["Reconciling"]
  if isTrue(reconciling) and reconciling.reason == "RolloutPaused" then
    return health("Suspended", prefixed("Rollout paused", reconciling))
  end
  if rolloutPhase == "Paused" then
    return health("Suspended", prefixed("Rollout paused", ready))
  end
  if isTrue(reconciling) then
    if reconciling.reason == "RolloutProgressing" then
      return health("Progressing", prefixed("Rollout in progress", reconciling))
    end
    return health("Progressing", describe(reconciling, "Reconciling"))
  end
  if rolloutPhase == "Progressing" then
    return health("Progressing", prefixed("Rollout in progress", ready))
  end

  if ready == nil then
    return health("Progressing", "Waiting for the Routeway operator to report the Ready condition")
  end
  if ready.status == "True" then
    return health("Healthy", healthyMessage(status))
  end
  -- Ready=False or Unknown and neither Stalled nor Reconciling says why: not settled yet.
  return health("Progressing", explain(ready, "Ready is " .. text(ready.status)))
end

-- END routeway common

return assess(obj, nil, function(status)
  local gateway, models = text(status.gateway), text(status.models)
  if models == "" then
    models = "*"
  end
  if gateway == "" then
    return "Key for models " .. models
  end
  return "Key for models " .. models .. " on gateway " .. gateway
end)
