"""Push one SendInvoiceEmail job per Chinook invoice, in one round trip.

Reads the same settings as the ``conveyor`` command, so ``--database URL``
and ``CONVEYOR_DATABASE_URL`` work here too:

    python push_invoices.py [--database URL]
"""

from __future__ import annotations

import sys

import sqlalchemy as sa
from jobs.send_invoice_email import SendInvoiceEmail, chinook_name

from conveyor import Queue
from conveyor.config import load_settings
from conveyor.db import create_engine, family_of


def invoice_ids(url: str) -> list[int]:
    engine = create_engine(url)
    try:
        dialect = family_of(engine)
        invoice_id = sa.column(chinook_name("InvoiceId", dialect))
        query = (
            sa.select(invoice_id)
            .select_from(sa.table(chinook_name("Invoice", dialect)))
            .order_by(invoice_id)
        )
        with engine.connect() as connection:
            return list(connection.execute(query).scalars())
    finally:
        engine.dispose()


def main(argv: list[str]) -> None:
    url = argv[argv.index("--database") + 1] if "--database" in argv else None
    settings = load_settings(database_url=url)
    ids = invoice_ids(settings.database_url)
    queue = Queue(settings=settings)
    try:
        job_ids = queue.bulk(SendInvoiceEmail, [{"invoice_id": i} for i in ids])
    finally:
        queue.close()
    print(f"pushed {len(job_ids)} SendInvoiceEmail jobs, one per invoice")


if __name__ == "__main__":
    main(sys.argv[1:])
