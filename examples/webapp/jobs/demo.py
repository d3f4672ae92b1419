"""The jobs the /queuetest page pushes.

They subclass ``AppJob``, so ``handle`` runs in the Flask application's app
context: the mail server comes from ``current_app.config``, as a real
application's would.
"""

from __future__ import annotations

import smtplib
from email.message import EmailMessage
from typing import Any

from flask import current_app

from conveyor.integrations.flask import AppJob


def send_mail(to: str, subject: str, body: str) -> None:
    message = EmailMessage()
    message["From"] = "Conveyor demo <demo@conveyor.example>"
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    host, port = current_app.config["MAIL_HOST"], current_app.config["MAIL_PORT"]
    with smtplib.SMTP(host, port, timeout=10) as smtp:
        smtp.send_message(message)


class SendWelcomeEmail(AppJob):
    """Mails a welcome to ``data["to"]``."""

    def handle(self, data: dict[str, Any]) -> None:
        send_mail(data["to"], "Welcome!", f"Hello {data['to']}, welcome aboard.")


class SendReminder(AppJob):
    """Pushed with a delay: mails a reminder once it is due."""

    def handle(self, data: dict[str, Any]) -> None:
        send_mail(data["to"], "A reminder", "You signed up a minute ago.")


class ChargeCard(AppJob):
    """Pushed on the ``high`` queue, which workers drain first."""

    queue = "high"

    def handle(self, data: dict[str, Any]) -> None:
        current_app.logger.info("charged order %s", data["order"])


class AlwaysFails(AppJob):
    """Raises, to show a failed job with its trace in the dashboard."""

    def handle(self, data: dict[str, Any]) -> None:
        raise RuntimeError(f"this job always fails (demo, order {data['order']})")
