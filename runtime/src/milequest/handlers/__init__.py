"""Lambda entry points: thin wrappers that parse the event and call a service."""

from . import snapstart as snapstart  # registers the SnapStart hooks, where they exist
