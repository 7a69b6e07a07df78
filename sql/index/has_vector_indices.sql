-- has_vector_indices: 1 on MyScale (it keeps a system.vector_indices catalogue), 0 on ClickHouse.
--
-- Columns: present
SELECT count() AS present FROM system.tables WHERE database = 'system' AND name = 'vector_indices';
