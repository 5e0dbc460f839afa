"""``python -m milequest.email_suppression``: the shared suppression list from the command line.

- ``export [--out FILE]``: the list as CSV (standard output by default);
- ``import FILE``: CSV rows into the list (a bad row is reported, the others go in);
- ``import-provider``: the provider's own list (SES account list, SendGrid's or Resend's
  suppressions) into the shared one.

It works on the list the configuration names: ``EMAIL_SUPPRESSION_TABLE`` (DynamoDB) with
the provider of ``EMAIL_PROVIDER``.
"""

from .cli import main

__all__ = ["main"]
