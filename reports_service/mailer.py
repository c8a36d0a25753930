"""Mail a rendered report through SMTP (smtplib): STARTTLS or TLS verified against the system's trust
store or ``smtp.ca_file``, optional AUTH with a password from the environment or a file.

Each occurrence of a schedule has a fixed Message-ID (schedule id and scheduled time), so in the one case
a message can go out twice (a runner killed after sending and before its commit, service_kit/jobs.py) the
copy carries the same id, and mail systems that deduplicate by Message-ID show it once.
"""

from __future__ import annotations

import smtplib
import ssl
from collections.abc import Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime

from reports_service.settings import SmtpSettings


class DeliveryError(Exception):
    """The SMTP server could not be reached, refused us, or refused a recipient: one line, no secrets."""


def build_message(
    settings: SmtpSettings,
    recipients: Sequence[str],
    subject: str,
    body: str,
    pdf: bytes,
    filename: str,
    message_id: str,
    date: datetime,
) -> EmailMessage:
    message = EmailMessage()
    message["From"] = settings.from_address
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message["Date"] = format_datetime(date)
    message["Message-ID"] = message_id
    message.set_content(body)
    message.add_attachment(pdf, maintype="application", subtype="pdf", filename=filename)
    return message


def tls_context(settings: SmtpSettings) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=settings.ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


def send(settings: SmtpSettings, message: EmailMessage) -> list[str]:
    """Send ``message``; returns the recipients the server accepted. Raises DeliveryError otherwise."""
    try:
        client: smtplib.SMTP
        if settings.security == "tls":
            client = smtplib.SMTP_SSL(
                settings.host, settings.port, timeout=settings.timeout_seconds, context=tls_context(settings)
            )
        else:
            client = smtplib.SMTP(settings.host, settings.port, timeout=settings.timeout_seconds)
        with client:
            client.ehlo()
            if settings.security == "starttls":
                client.starttls(context=tls_context(settings))
                client.ehlo()
            if settings.username:
                client.login(settings.username, settings.password)
            refused = client.send_message(message)
    except smtplib.SMTPAuthenticationError as exc:
        raise DeliveryError(f"SMTP authentication failed ({exc.smtp_code})") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise DeliveryError(f"SMTP refused every recipient ({len(exc.recipients)})") from None
    except smtplib.SMTPResponseException as exc:
        raise DeliveryError(f"SMTP error {exc.smtp_code}") from None
    except (smtplib.SMTPException, OSError) as exc:  # ssl.SSLError is an OSError
        raise DeliveryError(f"SMTP {settings.host}:{settings.port}: {type(exc).__name__}: {exc}"[:300]) from None
    return [address for address in message["To"].split(", ") if address not in refused]
