-- Order rows keep the ids of the events applied to them (`event_ids`), so deduplication
-- needs no insert into processed_events per event. Rows already there keep NULL: their
-- events' ids are in processed_events, where the store keeps looking them up.
-- Every generation's tables (`_gN`); tables created later get the column from their DDL.
DO $$ DECLARE r record; BEGIN
    FOR r IN SELECT table_name FROM information_schema.tables
             WHERE table_schema = current_schema()
               AND table_name ~ '^(inventory|payment|fulfilment)_orders(_g[0-9]+)?$'
    LOOP
        EXECUTE format('ALTER TABLE %I ADD COLUMN IF NOT EXISTS event_ids TEXT', r.table_name);
    END LOOP;
END $$;
