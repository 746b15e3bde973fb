-- The archive of closed incidents: one row per incident, written once by the mover when the
-- incident has been closed (or cancelled) longer than the hot period, then removed from Redis.
-- Times are milliseconds since the Unix epoch (UTC), as in the Redis record.
CREATE TABLE incidents (
    incident_id        text PRIMARY KEY,
    -- The Redis record's version the row was written from: a mover that finds the record
    -- changed since removes only the row of the version it wrote.
    version            text NOT NULL,
    reported_ms        bigint NOT NULL,
    closed_ms          bigint NOT NULL,
    archived_ms        bigint NOT NULL,
    -- gridroute.v1.IncidentStatus number (CLOSED, CANCELLED, …) and the category code.
    status             integer NOT NULL,
    category           text NOT NULL,
    -- The department handling it when it closed, and its region path (district → grid).
    department         text NOT NULL,
    regions            text[] NOT NULL,
    -- Every return (退单), by the department that made it.
    returned_by        text[] NOT NULL,
    -- The figures of GetStats (gridroute_store::stats::RowFigures at archiving time).
    state_name         text NOT NULL,
    arbitration        boolean NOT NULL,
    reopened           boolean NOT NULL,
    satisfaction       integer,
    accepted           boolean NOT NULL,
    accepted_on_time   boolean NOT NULL,
    breached           boolean NOT NULL,
    ever_resolved      boolean NOT NULL,
    -- Working time from first dispatch to resolution on the calendar in force when archived.
    resolve_working_ms bigint,
    -- The whole record (gridroute.v1.Incident with its timeline), without the reporter's
    -- contact, which is kept apart so that erasing it is one column.
    record             bytea NOT NULL,
    -- gridroute.v1.ReporterContact; NULL when there was none or it was erased (PIPL).
    contact            bytea,
    contact_erased_ms  bigint
);

CREATE INDEX incidents_by_report ON incidents (reported_ms DESC, incident_id DESC);
CREATE INDEX incidents_by_department ON incidents (department, reported_ms DESC);
CREATE INDEX incidents_by_region ON incidents USING gin (regions);
CREATE INDEX incidents_by_returner ON incidents USING gin (returned_by);
CREATE INDEX incidents_contact_due ON incidents (closed_ms) WHERE contact IS NOT NULL;

-- The article's headline figure for analysts: per department and month (Beijing time) of
-- report, how many incidents, how many resolved, and the average working hours to resolve.
CREATE VIEW department_month AS
SELECT department,
       date_trunc('month', to_timestamp(reported_ms / 1000.0) AT TIME ZONE 'Asia/Shanghai') AS month,
       count(*) AS incidents,
       count(resolve_working_ms) AS resolved,
       avg(resolve_working_ms) / 3600000.0 AS resolve_working_hours_avg,
       count(*) FILTER (WHERE breached) AS breached
FROM incidents
GROUP BY 1, 2;
