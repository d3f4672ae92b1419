"""A small SMTP server that keeps every mail it receives as a line of JSON.

It stands in for the shop's mail provider in the demo and the tests:
``SendInvoiceEmail`` really talks SMTP to it, and counting its lines says
how many mails arrived and whether any invoice arrived twice.

    python mailbox.py --port 8025 --out mails.jsonl   # until SIGTERM or ^C
    python mailbox.py --count --out mails.jsonl       # what has arrived

Each line holds the invoice id and attempt from the ``X-Chinook-*`` headers,
the Message-ID, the envelope sender and recipients, the To and Subject
headers and the plain-text body. From Python::

    controller = start_mailbox(Path("mails.jsonl"), port=8025)
    ...
    controller.stop()
    mails = read_mails(Path("mails.jsonl"))
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from collections import Counter
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiosmtpd.controller import Controller


class Mailbox:
    """An aiosmtpd handler appending one JSON line per mail to ``out``."""

    def __init__(self, out: Path) -> None:
        self.out = out
        # The handler runs on the controller's event loop thread, but a
        # process may run several controllers on one file.
        self._lock = threading.Lock()

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 - aiosmtpd's hook name
        message = message_from_bytes(envelope.content, policy=policy.default)
        assert isinstance(message, EmailMessage)
        body = message.get_body(preferencelist=("plain",))
        record = {
            "invoice_id": _int_or_none(message["X-Chinook-Invoice"]),
            "attempt": _int_or_none(message["X-Chinook-Attempt"]),
            "message_id": message["Message-ID"],
            "mail_from": envelope.mail_from,
            "rcpt_tos": list(envelope.rcpt_tos),
            "to": str(message["To"]),
            "subject": str(message["Subject"]),
            "body": body.get_content() if body is not None else "",
            "received_at": time.time(),
        }
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.out.open("a", encoding="utf-8") as handle:
            handle.write(line)
        return "250 Message accepted for delivery"


def _int_or_none(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def start_mailbox(
    out: Path, *, port: int = 8025, host: str = "127.0.0.1"
) -> Controller:
    """Start listening on ``host:port`` in a background thread; returns once
    the server accepts connections. Call ``.stop()`` on the result."""
    controller = Controller(
        Mailbox(out),
        hostname=host,
        port=port,
        # Customer 49's address is not ASCII; without SMTPUTF8 on offer,
        # smtplib refuses to send to it.
        enable_SMTPUTF8=True,
    )
    controller.start()
    return controller


def read_mails(path: Path) -> list[dict[str, Any]]:
    """Every mail ``path`` holds, oldest first; none if it does not exist."""
    if not path.exists():
        return []
    with path.open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


def count(path: Path) -> str:
    """How many mails ``path`` holds, for how many invoices, and how many
    invoices arrived more than once."""
    invoices = Counter(mail["invoice_id"] for mail in read_mails(path))
    twice = sum(1 for n in invoices.values() if n > 1)
    return (
        f"{sum(invoices.values())} mails received, for {len(invoices)} distinct "
        f"invoices; {twice} invoices received more than once"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8025)
    parser.add_argument("--out", type=Path, default=Path("mails.jsonl"))
    parser.add_argument(
        "--count",
        action="store_true",
        help="print how many mails --out holds and exit, instead of listening",
    )
    args = parser.parse_args()
    if args.count:
        print(count(args.out))
        return

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller = start_mailbox(args.out, port=args.port, host=args.host)
    print(
        f"mailbox: listening on {args.host}:{args.port}, writing to {args.out}",
        flush=True,
    )
    try:
        stop.wait()
    finally:
        controller.stop()


if __name__ == "__main__":
    main()
