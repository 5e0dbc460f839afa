#!/usr/bin/env python3
"""CDK entry point: one Stage per environment (dev, staging, prod), checked by cdk-nag."""

import sys

from aws_cdk import App

from infra.nag import FAIL_ON_FINDINGS, unacknowledged_findings
from infra.stage import build_app

app = App(post_cli_context=FAIL_ON_FINDINGS)
build_app(app)
assembly = app.synth()
if findings := unacknowledged_findings(assembly.directory):
    sys.exit("cdk-nag findings (acknowledge with a reason or fix):\n  " + "\n  ".join(findings))
