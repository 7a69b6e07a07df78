-- analyst_readonly: a read-only role for analysts on a ClickHouse server (not chDB).
--
-- Members can SELECT every clipsql table and view but cannot write, drop or change
-- settings that would let them (readonly = 2 still allows per-query settings such as
-- hnsw_candidate_list_size_for_search). Create a user and grant the role to it:
--   CREATE USER alice IDENTIFIED WITH sha256_password BY '...';
--   GRANT clipsql_analyst TO alice;
--
-- Parameters:
--   database Identifier  the database clipsql loads into
CREATE ROLE IF NOT EXISTS clipsql_analyst;
GRANT SELECT ON {database:Identifier}.* TO clipsql_analyst;
CREATE SETTINGS PROFILE IF NOT EXISTS clipsql_analyst_profile SETTINGS readonly = 2 TO clipsql_analyst;
