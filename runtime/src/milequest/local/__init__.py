"""The embedded local stack behind ``make dev`` (``python -m milequest.local``).

```python
with LocalStack(LocalStackConfig(aws_port=0, gateway_port=0, ...)) as stack:
    print(stack.urls["websocket"], stack.env)
```
"""

from .aws import AwsResources, EmbeddedAws
from .gateway import GatewayConfig, WebSocketGateway
from .lambda_runtime import LocalLambdaContext, WebSocketHandlers
from .smtp_sink import CapturedEmail, SmtpSink
from .stack import LocalStack, LocalStackConfig, PortInUseError, StackStartError

__all__ = [
    "AwsResources",
    "CapturedEmail",
    "EmbeddedAws",
    "GatewayConfig",
    "LocalLambdaContext",
    "LocalStack",
    "LocalStackConfig",
    "PortInUseError",
    "SmtpSink",
    "StackStartError",
    "WebSocketGateway",
    "WebSocketHandlers",
]
