-- Argo CD health of reasonops.io resources (ReasoningDataset, FineTuneJob, EvalRun), read from the
-- conditions the operator writes. One script serves the three kinds; register it under
-- resource.customizations.health.reasonops.io_<Kind> (see examples/gitops/argocd-cm-health.yaml).
--
--   Failed=True                        Degraded  (the current revision failed)
--   EvalRun Passed=False               Degraded  (a gate was missed: do not promote)
--   waiting on a failed input          Degraded  (DatasetFailed, ModelFailed, NoCheckpoints, BaselineFailed,
--                                                BaselineUnusable: fix the upstream)
--   Suspended=True                     Suspended
--   Ready=True (EvalRun: Passed=True)  Healthy
--   anything else                      Progressing (pending, running, waiting, or not yet seen)
local hs = {status = "Progressing", message = "waiting for the reasonops operator"}

if obj.status == nil or obj.status.conditions == nil then
  return hs
end

-- A status written for an older spec says nothing about the current one: a git change was synced
-- and the operator has not reconciled it yet.
local generation = obj.metadata and obj.metadata.generation
if generation ~= nil and obj.status.observedGeneration ~= nil and obj.status.observedGeneration < generation then
  hs.message = "the operator has not yet seen generation " .. tostring(generation)
  return hs
end

local conditions = {}
for _, c in ipairs(obj.status.conditions) do
  if c.type ~= nil then
    conditions[c.type] = c
  end
end

local function has(type_, status)
  return conditions[type_] ~= nil and conditions[type_].status == status
end

local function describe(c)
  local reason = c.reason or c.type
  if c.message ~= nil and c.message ~= "" then
    return reason .. ": " .. c.message
  end
  return reason
end

if has("Failed", "True") then
  return {status = "Degraded", message = describe(conditions["Failed"])}
end

if obj.kind == "EvalRun" and has("Passed", "False") then
  return {status = "Degraded", message = describe(conditions["Passed"])}
end

if has("Progressing", "True") then
  local reason = conditions["Progressing"].reason
  if reason == "DatasetFailed" or reason == "ModelFailed" or reason == "NoCheckpoints" or reason == "BaselineFailed"
     or reason == "BaselineUnusable" then
    return {status = "Degraded", message = describe(conditions["Progressing"])}
  end
end

if has("Suspended", "True") then
  return {status = "Suspended", message = describe(conditions["Suspended"])}
end

if has("Progressing", "True") then
  return {status = "Progressing", message = describe(conditions["Progressing"])}
end

if has("Ready", "True") then
  if obj.kind == "EvalRun" and not has("Passed", "True") then
    hs.message = "evaluated; waiting for the gate verdict"
    return hs
  end
  local message = describe(conditions["Ready"])
  if obj.kind == "EvalRun" then
    message = describe(conditions["Passed"])
  end
  return {status = "Healthy", message = message}
end

if conditions["Ready"] ~= nil then
  hs.message = describe(conditions["Ready"])
end
return hs
