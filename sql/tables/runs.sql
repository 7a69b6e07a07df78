-- runs: the history of pipeline runs (run, refresh, demo): when, what, outcome, full report.
--
-- `report` is the run's JSON report (per stage: counts, rejects by reason, durations).
CREATE TABLE IF NOT EXISTS runs
(
    run_id String,
    command LowCardinality(String),
    started_at DateTime64(3, 'UTC'),
    finished_at DateTime64(3, 'UTC'),
    outcome LowCardinality(String),
    source String,
    dataset_version String,
    error String,
    report String
)
ENGINE = MergeTree
ORDER BY started_at;
