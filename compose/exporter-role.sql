-- hive_exporter: the PostgreSQL exporter's role (compose's postgres-monitor service runs this as the
-- database owner, with psql's variable `password`). It may read the server's statistics (pg_monitor)
-- and nothing of Hive's. Safe to run again: it creates the role once, then only sets its password.
SELECT 'CREATE ROLE hive_exporter LOGIN'
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'hive_exporter')\gexec
ALTER ROLE hive_exporter WITH LOGIN PASSWORD :'password';
GRANT pg_monitor TO hive_exporter;
