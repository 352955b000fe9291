-- Orthanc → OncoNode routing rule: forward every stable CT or MR series to the modality "onconode"
-- (DicomModalities in orthanc.json), and never route back what OncoNode sent (its SR and SC results
-- arrive with calling AE ONCONODE). Checked with Orthanc 1.10.1 by tests/test_deploy.py.
--
-- RestApiPost('/modalities/.../store') runs a real job (visible in /jobs with Success or Failure);
-- Lua's SendToModality takes instance IDs only on 1.10.1, so it is not used for a series.

local TARGET = 'onconode'
local ONCONODE_AET = 'ONCONODE'
local ANALYSED = { CT = true, MR = true }

function OnStableSeries(seriesId, tags, metadata)
  local modality = tags['Modality'] or ''
  local series = ParseJson(RestApiGet('/series/' .. seriesId))
  local meta = ParseJson(RestApiGet('/instances/' .. series['Instances'][1] .. '/metadata?expand'))
  local origin = meta['RemoteAET'] or ''   -- calling AE of the C-STORE; absent for REST uploads
  if origin == ONCONODE_AET or not ANALYSED[modality] then
    print('route.lua: not routing ' .. modality .. ' series ' .. seriesId .. ' from ' .. origin)
    return
  end
  print('route.lua: routing ' .. modality .. ' series ' .. seriesId .. ' to ' .. TARGET)
  RestApiPost('/modalities/' .. TARGET .. '/store',
    DumpJson({ Resources = { seriesId }, Asynchronous = true }, true))
end
