"""``python -m milequest.email_dlq``: the email queue's dead-letter queue from the command line.

- ``list [--json] [--limit N]``: each message with its reason (error code and message, the
  receives it took, when, the provider), our id and its recipients;
- ``redrive ID ... | --all``: move the named messages (our id or SQS's message id), or every
  one, back to the email queue, without their failure attributes;
- ``purge [--yes]``: delete every message, after typing the queue's name to confirm
  (``--yes`` skips the question, for scripts).

It works on the queues the configuration names: ``EMAIL_DEAD_LETTER_QUEUE_URL`` and, to
redrive, ``EMAIL_QUEUE_URL``.
"""

from .cli import main

__all__ = ["main"]
