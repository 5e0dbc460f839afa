"""Mile Quest Services runtime: provider-agnostic WebSocket and email services."""

__version__ = "0.1.0"
