#!/usr/bin/env bash
# The Chinook demo, on a fresh SQLite file in a scratch folder:
#  1. migrations that build and fill the Chinook sample database, inspected,
#     rolled back and reset;
#  2. the mail story: one SendInvoiceEmail job per invoice (412), sent by two
#     workers to a real SMTP server (mailbox.py); a few customers meet a busy
#     server and are retried, one invoice is refused for good and waits in
#     failed_jobs until it is fixed and retried. Every invoice arrives once.
# Pass --database URL to run it on PostgreSQL or MySQL instead.
set -euo pipefail
source "$(dirname "$0")/setup.sh"
work="$(mktemp -d)"
cp -r "$root/examples/chinook" "$work/"
cd "$work/chinook"
rm -f chinook.db mails.jsonl fixed_invoices.txt

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }
say() { printf '\n\033[1m# %s\033[0m\n' "$*"; }

# -- 1. migrations ------------------------------------------------------------
step conveyor migrate status "$@"
step conveyor migrate "$@"
step conveyor migrate status "$@"
step python count_rows.py "$@"
step conveyor migrate rollback "$@"
step conveyor migrate "$@"
step conveyor migrate reset "$@"
step conveyor migrate status "$@"

# -- 2. mailing every invoice -------------------------------------------------
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

# A free port, so a mail server already on 8025 cannot take the demo's mail.
CHINOOK_SMTP_PORT="$(python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export CHINOOK_SMTP_PORT
say "the shop's mail server, in the background"
printf '$ python mailbox.py --port %s --out mails.jsonl &\n' "$CHINOOK_SMTP_PORT"
python mailbox.py --port "$CHINOOK_SMTP_PORT" --out mails.jsonl >mailbox.log 2>&1 &
pids+=("$!")
for _ in $(seq 1 100); do
  grep -q listening mailbox.log && break
  kill -0 "${pids[0]}" 2>/dev/null || { cat mailbox.log; exit 1; }
  sleep 0.1
done
cat mailbox.log

step conveyor migrate "$@"
# Jobs and failed jobs left by an earlier run on the same server database
# would spoil the counts; a fresh SQLite file has none.
conveyor queue clear --force "$@" >/dev/null
conveyor queue flush "$@" >/dev/null
step python push_invoices.py "$@"
step conveyor queue status "$@"

work_options=(--queue=default --tries=3 --backoff=0 --sleep=0 --stop-when-empty)
say "two workers at once; their RETRY and FAILED lines, and their totals"
printf '$ conveyor queue work %s & conveyor queue work %s & wait\n' \
  "${work_options[*]}" "${work_options[*]}"
conveyor queue work "${work_options[@]}" "$@" >worker-1.log 2>&1 &
pids+=("$!")
conveyor queue work "${work_options[@]}" "$@" >worker-2.log 2>&1 &
pids+=("$!")
for pid in "${pids[1]}" "${pids[2]}"; do
  wait "$pid" || { cat worker-1.log worker-2.log; exit 1; }
done
for n in 1 2; do
  printf -- '-- worker %s (all its lines: %s)\n' "$n" "$work/chinook/worker-$n.log"
  grep -E 'RETRY|FAILED|gave up|worker stopped' "worker-$n.log"
done
step conveyor queue status "$@"
step conveyor queue failed "$@"

refused="$(python -c 'from jobs.send_invoice_email import DEMO_REFUSED_INVOICE as i; print(i)')"
say "the fix for invoice $refused, then its job goes back onto the queue"
printf '$ echo %s > fixed_invoices.txt\n' "$refused"
echo "$refused" >fixed_invoices.txt
step conveyor queue retry all "$@"
step conveyor queue work "${work_options[@]}" "$@"
step conveyor queue status "$@"
step python mailbox.py --count --out mails.jsonl
printf '\nThe demo ran in %s (delete it when done).\n' "$work/chinook"
