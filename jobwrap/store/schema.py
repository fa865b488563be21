"""The history's schema, as migration steps: step N brings ``user_version`` N-1 to N."""

# Step 1: the schema of jobwrap's first releases.  Never edit a step: add one.
_V1 = """
CREATE TABLE IF NOT EXISTS runs (
    run_id TEXT PRIMARY KEY,
    job TEXT NOT NULL,                 -- monitor slug, else the command: groups a job's runs
    monitor TEXT,
    command TEXT NOT NULL,
    schedule TEXT,
    host TEXT NOT NULL,
    started_at TEXT NOT NULL,          -- ISO 8601, UTC
    duration_ms INTEGER NOT NULL,
    exit_code INTEGER NOT NULL,        -- jobwrap's exit status for the run (128+N, 124, ...)
    signal TEXT,
    timed_out INTEGER NOT NULL DEFAULT 0,
    skipped TEXT,                      -- why the command was not started, if it was not
    error TEXT,                        -- e.g. "command not found: foo"
    stdout_lines INTEGER NOT NULL DEFAULT 0,
    stderr_lines INTEGER NOT NULL DEFAULT 0,
    metas TEXT NOT NULL,               -- JSON [{"name": ..., "value": ...}], as reported
    cpu_user_s REAL,
    cpu_sys_s REAL,
    max_rss_kb INTEGER,
    output_head BLOB,
    output_tail BLOB,
    output_omitted_lines INTEGER,
    report_status TEXT NOT NULL DEFAULT 'none',  -- none | pending | sent | refused
    report_error TEXT,
    report_attempts INTEGER NOT NULL DEFAULT 0,
    report_claim TEXT,                 -- who is delivering it now (see claim_pending)
    report_claimed_until REAL,
    report_sent_at TEXT
);
CREATE INDEX IF NOT EXISTS runs_by_time ON runs (started_at);
CREATE INDEX IF NOT EXISTS runs_by_job ON runs (job, started_at);
CREATE INDEX IF NOT EXISTS runs_by_report ON runs (report_status, started_at)
    WHERE report_status IN ('pending', 'refused');
"""
# Step 2: runs recorded before their command starts; arguments kept losslessly.
_V2 = """
ALTER TABLE runs ADD COLUMN state TEXT NOT NULL DEFAULT 'finished';  -- or 'running'
ALTER TABLE runs ADD COLUMN argv TEXT;  -- JSON list; undecodable bytes as surrogateescape
ALTER TABLE runs ADD COLUMN pid INTEGER;  -- jobwrap's, for telling running from abandoned
ALTER TABLE runs ADD COLUMN boot_id TEXT;
CREATE INDEX IF NOT EXISTS runs_running ON runs (state) WHERE state = 'running'
"""
STEPS = (_V1, _V2)
SCHEMA_VERSION = len(STEPS)
RUNNING = "running"
FINISHED = "finished"
ABANDONED = "abandoned"  # only as read: a running row whose jobwrap is gone
