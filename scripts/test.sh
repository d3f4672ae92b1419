#!/usr/bin/env bash
# Runs the whole test suite on SQLite, PostgreSQL and MariaDB/MySQL.
# Servers: CONVEYOR_TEST_POSTGRESQL_URL and CONVEYOR_TEST_MYSQL_URL (defaults:
# the local servers); CONVEYOR_TEST_DATABASES=sqlite narrows the run. With
# CI=true an unreachable server fails the run instead of skipping it.
# Extra arguments go to pytest.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
cd "$root"
python -m pytest "$@"
