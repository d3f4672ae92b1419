"""Mail one Chinook invoice to its customer, over SMTP.

Push it with ``{"invoice_id": N}``; ``push_invoices.py`` pushes one per
invoice. The job reads the invoice, its customer and its lines from the
Chinook tables of the database the worker serves, writes a plain-text mail
and hands it to the SMTP server at ``CHINOOK_SMTP_HOST``:``CHINOOK_SMTP_PORT``
(default 127.0.0.1:8025, where ``mailbox.py`` listens).

SMTP says itself which failures are worth a retry: a 4xx reply is transient
("try again later"), a 5xx reply is permanent. A transient failure raises, so
the worker retries the job while it has tries left; a permanent one fails the
job at once with ``self.fail()``, since sending the same mail again would be
refused again, and it waits in ``failed_jobs`` for ``conveyor queue retry``.

Two failures are staged for the demo (see ``DEMO_BUSY_CUSTOMERS`` and
``DEMO_REFUSED_INVOICE``): they are raised as the SMTP replies a server
would give, before anything is sent, and take the same path as real ones.
"""

from __future__ import annotations

import os
import re
import smtplib
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from email.headerregistry import Address
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from conveyor import Job
from conveyor.db import connect, create_engine, family_of

# -- demo devices: failures staged on purpose, not part of a real job ---------

#: Every invoice of these customers (7 each) meets a busy server on its first
#: attempt: a 421 reply, which SMTP defines as transient. The worker retries
#: the job and the second attempt is delivered.
DEMO_BUSY_CUSTOMERS = frozenset({5, 17, 42})

#: This invoice is refused for good with a 554 reply until it is "fixed",
#: that is listed (one invoice id per line) in ``DEMO_FIX_FILE``. It lands in
#: failed_jobs; once the fix is in, ``conveyor queue retry all`` delivers it.
DEMO_REFUSED_INVOICE = 200
DEMO_FIX_FILE = Path(__file__).resolve().parents[1] / "fixed_invoices.txt"

# -- settings -------------------------------------------------------------------

SENDER = Address("Chinook Music Store", "invoices", "chinook.example")
#: Seconds to wait for the SMTP server to answer, well under the worker's
#: --timeout so a stuck server shows as an SMTP error rather than a killed job.
SMTP_TIMEOUT = 10.0


def smtp_server() -> tuple[str, int]:
    """Host and port of the SMTP server, from the environment."""
    host = os.environ.get("CHINOOK_SMTP_HOST", "127.0.0.1")
    return host, int(os.environ.get("CHINOOK_SMTP_PORT", "8025"))


def chinook_name(name: str, dialect: str) -> str:
    """How the Chinook scripts for ``dialect`` spell ``name``: PascalCase,
    except in snake_case on PostgreSQL (``InvoiceLine`` is ``invoice_line``),
    as in the migrations."""
    if dialect != "postgresql":
        return name
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", name).lower()


# -- reading the invoice --------------------------------------------------------


@dataclass(frozen=True)
class Line:
    track: str
    unit_price: Decimal
    quantity: int

    @property
    def amount(self) -> Decimal:
        return self.unit_price * self.quantity


@dataclass(frozen=True)
class Invoice:
    id: int
    date: datetime
    total: Decimal
    customer_id: int
    first_name: str
    last_name: str
    email: str
    billing: tuple[str, ...]
    lines: tuple[Line, ...]


def _table(dialect: str, name: str, **columns: Any) -> sa.TableClause:
    return sa.table(
        chinook_name(name, dialect),
        *(sa.column(chinook_name(c, dialect), t) for c, t in columns.items()),
    )


def _column(table: sa.TableClause, name: str, dialect: str) -> Any:
    # Labelled with the PascalCase name, so rows read the same everywhere.
    return table.c[chinook_name(name, dialect)].label(name)


def read_invoice(engine: sa.Engine, invoice_id: int) -> Invoice:
    """The invoice with its customer and lines; ``LookupError`` if missing."""
    dialect = family_of(engine)
    money = sa.Numeric(10, 2)
    text = sa.String()
    invoice = _table(
        dialect,
        "Invoice",
        InvoiceId=sa.Integer(),
        CustomerId=sa.Integer(),
        InvoiceDate=sa.DateTime(),
        BillingAddress=text,
        BillingCity=text,
        BillingState=text,
        BillingCountry=text,
        BillingPostalCode=text,
        Total=money,
    )
    customer = _table(
        dialect,
        "Customer",
        CustomerId=sa.Integer(),
        FirstName=text,
        LastName=text,
        Email=text,
    )
    line = _table(
        dialect,
        "InvoiceLine",
        InvoiceLineId=sa.Integer(),
        InvoiceId=sa.Integer(),
        TrackId=sa.Integer(),
        UnitPrice=money,
        Quantity=sa.Integer(),
    )
    track = _table(dialect, "Track", TrackId=sa.Integer(), Name=text)

    def col(table: sa.TableClause, name: str) -> Any:
        return _column(table, name, dialect)

    def key(table: sa.TableClause, name: str) -> Any:
        return table.c[chinook_name(name, dialect)]

    head_query = (
        sa.select(
            *(
                col(invoice, name)
                for name in (
                    "InvoiceId",
                    "InvoiceDate",
                    "Total",
                    "BillingAddress",
                    "BillingCity",
                    "BillingState",
                    "BillingPostalCode",
                    "BillingCountry",
                )
            ),
            *(
                col(customer, name)
                for name in ("CustomerId", "FirstName", "LastName", "Email")
            ),
        )
        .select_from(
            invoice.join(
                customer, key(invoice, "CustomerId") == key(customer, "CustomerId")
            )
        )
        .where(key(invoice, "InvoiceId") == invoice_id)
    )
    lines_query = (
        sa.select(col(track, "Name"), col(line, "UnitPrice"), col(line, "Quantity"))
        .select_from(line.join(track, key(line, "TrackId") == key(track, "TrackId")))
        .where(key(line, "InvoiceId") == invoice_id)
        .order_by(key(line, "InvoiceLineId"))
    )
    # Read-only: on SQLite this begins a deferred transaction, which never
    # waits for the workers writing to the jobs table.
    with connect(engine, read_only=True) as connection:
        head = connection.execute(head_query).mappings().first()
        if head is None:
            raise LookupError(f"invoice {invoice_id} does not exist")
        rows = connection.execute(lines_query).mappings().all()

    cent = Decimal("0.01")
    billing = (
        head["BillingAddress"],
        " ".join(
            part
            for part in (
                head["BillingPostalCode"],
                head["BillingCity"],
                head["BillingState"],
            )
            if part
        ),
        head["BillingCountry"],
    )
    return Invoice(
        id=head["InvoiceId"],
        date=head["InvoiceDate"],
        # SQLite keeps these as binary floating point; round to the cent.
        total=Decimal(head["Total"]).quantize(cent),
        customer_id=head["CustomerId"],
        first_name=head["FirstName"],
        last_name=head["LastName"],
        email=head["Email"],
        billing=tuple(part for part in billing if part),
        lines=tuple(
            Line(row["Name"], Decimal(row["UnitPrice"]).quantize(cent), row["Quantity"])
            for row in rows
        ),
    )


# -- writing and sending the mail ---------------------------------------------


def build_message(invoice: Invoice, *, attempt: int, job_uuid: str) -> EmailMessage:
    """The invoice as a plain-text mail.

    The Message-ID stays the same across attempts and ``queue retry`` (the
    job's uuid survives both), so a receiver can spot a mail sent twice; the
    ``X-Chinook-*`` headers say which invoice and which attempt sent it."""
    message = EmailMessage()
    message["From"] = SENDER
    # Given as its two halves: Address(addr_spec=...) refuses a local part
    # that is not ASCII, such as customer 49's, which SMTPUTF8 delivers fine.
    username, _, domain = invoice.email.rpartition("@")
    message["To"] = Address(
        f"{invoice.first_name} {invoice.last_name}", username, domain
    )
    message["Subject"] = (
        f"Your Chinook invoice #{invoice.id} of {invoice.date:%Y-%m-%d}"
    )
    message["Message-ID"] = f"<invoice-{invoice.id}.{job_uuid}@chinook.example>"
    message["X-Chinook-Invoice"] = str(invoice.id)
    message["X-Chinook-Attempt"] = str(attempt)

    # Track names run up to 123 characters; longer ones than 50 are cut so
    # the columns still fit a mail reader's window.
    width = min(max([len("Track")] + [len(line.track) for line in invoice.lines]), 50)
    table = [f"  {'Track':<{width}}  {'Qty':>3}  {'Price':>6}  {'Amount':>7}"]
    for line in invoice.lines:
        track = (
            line.track if len(line.track) <= width else line.track[: width - 1] + "…"
        )
        table.append(
            f"  {track:<{width}}  {line.quantity:>3}  {line.unit_price:>6}  "
            f"{line.amount:>7}"
        )
    table.append(f"  {'Total':<{width}}  {'':>3}  {'':>6}  {invoice.total:>7}")
    billing = "\n".join(f"  {part}" for part in invoice.billing)
    message.set_content(
        f"Dear {invoice.first_name} {invoice.last_name},\n\n"
        f"thank you for shopping at Chinook. Invoice #{invoice.id} of "
        f"{invoice.date:%Y-%m-%d}, in US dollars:\n\n"
        + "\n".join(table)
        + f"\n\nBilled to:\n{billing}\n\nChinook Music Store\n"
    )
    return message


def send(message: EmailMessage) -> None:
    host, port = smtp_server()
    # send_message() asks for SMTPUTF8 by itself when an address is not ASCII
    # (customer 49's is), and fails if the server does not offer it.
    with smtplib.SMTP(host, port, timeout=SMTP_TIMEOUT) as smtp:
        smtp.send_message(message)


class TransientSMTPError(Exception):
    """A 4xx reply: the server asks to try again later."""


def _reply_text(message: bytes | str) -> str:
    return message.decode(errors="replace") if isinstance(message, bytes) else message


class SendInvoiceEmail(Job):
    #: One try plus two retries, whatever --tries the worker runs with: the
    #: busy-server customers need their second attempt.
    tries = 3

    def handle(self, data: dict[str, Any]) -> None:
        invoice = read_invoice(_engine(self), int(data["invoice_id"]))
        message = build_message(
            invoice, attempt=self.context.attempt, job_uuid=self.context.uuid
        )
        try:
            _demo_failures(invoice, self.context.attempt)
            send(message)
        except smtplib.SMTPRecipientsRefused as exc:
            # The mail has one recipient, so one reply.
            [(code, text)] = exc.recipients.values()
            reply = f"SMTP {code} {_reply_text(text)}"
            if code >= 500:
                self.fail(f"invoice {invoice.id}: {reply}")
            raise TransientSMTPError(f"invoice {invoice.id}: {reply}") from exc
        except smtplib.SMTPResponseException as exc:
            reply = f"SMTP {exc.smtp_code} {_reply_text(exc.smtp_error)}"
            if exc.smtp_code >= 500:
                self.fail(f"invoice {invoice.id}: {reply}")
            raise TransientSMTPError(f"invoice {invoice.id}: {reply}") from exc

    def failed(self, data: dict[str, Any], error: str) -> None:
        # Runs once, when the job lands in failed_jobs; a real shop might
        # alert someone here. The worker's output is where the demo shows it.
        print(
            f"SendInvoiceEmail: gave up on invoice {data['invoice_id']}: {error}",
            file=sys.stderr,
        )


#: One engine per database URL for the life of the worker's job process, so
#: each job reuses a pooled connection instead of opening its own.
_engines: dict[str, sa.Engine] = {}


def _engine(job: Job) -> sa.Engine:
    # The worker's own settings, --database included: the queue client the
    # worker hands each job is built from them. load_settings() here would
    # read conveyor.toml and CONVEYOR_DATABASE_URL only, and miss --database.
    url = job.context.queue_client.settings.database_url
    if url not in _engines:
        _engines[url] = create_engine(url)
    return _engines[url]


def _demo_failures(invoice: Invoice, attempt: int) -> None:
    """Raise the staged failures described at the top of this file."""
    if invoice.customer_id in DEMO_BUSY_CUSTOMERS and attempt == 1:
        raise smtplib.SMTPResponseException(
            421,
            "4.3.2 Server busy, try again later "
            f"(demo: customer {invoice.customer_id})",
        )
    if invoice.id == DEMO_REFUSED_INVOICE and not _demo_fixed(invoice.id):
        raise smtplib.SMTPResponseException(
            554,
            f"5.7.1 Message refused (demo: until {DEMO_FIX_FILE.name} lists "
            f"invoice {invoice.id})",
        )


def _demo_fixed(invoice_id: int) -> bool:
    try:
        text = DEMO_FIX_FILE.read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return str(invoice_id) in text.split()
