#!/usr/bin/env bash
# The Chinook demo: migrations that build and fill the Chinook sample
# database, run on a fresh SQLite file, inspected, rolled back and reset.
# Pass --database URL to run it on PostgreSQL or MySQL instead.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
work="$(mktemp -d)"
cp -r "$root/examples/chinook" "$work/"
cd "$work/chinook"
rm -f chinook.db

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

step conveyor migrate status "$@"
step conveyor migrate "$@"
step conveyor migrate status "$@"
step python count_rows.py "$@"
step conveyor migrate rollback "$@"
step conveyor migrate "$@"
step conveyor migrate reset "$@"
step conveyor migrate status "$@"
printf '\nThe demo ran in %s (delete it when done).\n' "$work/chinook"
