"""Results as FHIR R4: the DiagnosticReport transaction Bundle for the EHR."""
