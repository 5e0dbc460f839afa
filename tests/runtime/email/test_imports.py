"""Cold-start hygiene: what importing the package and creating the SES service load."""

from __future__ import annotations

import json
import os
import subprocess
import sys

PROBE = """
import json, sys
import milequest.services.email as email
after_import = sorted(sys.modules)
email.create_email_service("ses", aws_ses_region="us-east-1")
print(json.dumps({"import": after_import, "create": sorted(sys.modules)}))
"""


def test_heavy_modules_load_only_when_needed() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SES_", "SMTP_", "EMAIL_"))}
    env["DEFAULT_FROM_EMAIL"] = "noreply@milequest.example"
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, env=env
    )
    loaded = json.loads(out.stdout)
    on_import, on_create = set(loaded["import"]), set(loaded["create"])
    for heavy in ("pydantic", "boto3", "botocore", "email_validator", "aws_lambda_powertools"):
        assert heavy not in on_import, heavy
    assert "botocore.client" in on_create
    for unused in (
        "boto3",  # the client comes from botocore's session directly
        "pybars",
        "aws_lambda_powertools",
        "milequest.services.email.smtp",
        "milequest.services.email.mock",
        "milequest.services.email.models",
        "milequest.services.websocket",
    ):
        assert unused not in on_create, unused
