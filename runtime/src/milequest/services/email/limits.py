"""Limits shared by every provider (SES's, the strictest of the common ones)."""

MAX_RECIPIENTS = 50
"""Recipients of one message, to + cc + bcc (SES; Resend allows 50 in ``to``)."""
MAX_MESSAGE_BYTES = 40 * 1024 * 1024
"""One message encoded, attachments included (SES and Resend; SendGrid allows 30 MB)."""
MAX_TEMPLATE_DATA_BYTES = 262_144
"""Template data as JSON (SES ``EmailTemplateData``)."""
