"""Results out: the outbox on disk, then C-STORE and FHIR senders with retries and a dead letter."""
