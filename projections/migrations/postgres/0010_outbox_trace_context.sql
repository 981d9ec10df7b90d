-- The W3C trace context of the decision each outbox event came from (issue 31): the relay
-- publishes the event with it, so the trace of an order goes on past the process. Null
-- when tracing was off or the cause carried none.
ALTER TABLE outbox ADD COLUMN trace_parent TEXT;
