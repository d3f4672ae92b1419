#!/usr/bin/env bash
# The /queuetest demo: a small Flask application on a fresh SQLite file in a
# scratch folder, with one worker, the Chinook example's SMTP mailbox and the
# dashboard at /conveyor/. Open http://127.0.0.1:5000/queuetest; ^C stops it.
# Options go to app.py: --port, --smtp-port, --database URL.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
work="$(mktemp -d)"
cp -r "$root/examples/webapp" "$work/"
mkdir "$work/chinook"
cp "$root/examples/chinook/mailbox.py" "$work/chinook/"
cd "$work/webapp"
rm -f conveyor.db mails.jsonl
echo "demo folder: $work/webapp (conveyor.db, mails.jsonl)"
exec python app.py "$@"
