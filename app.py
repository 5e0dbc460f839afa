#!/usr/bin/env python3
"""CDK entry point: one Stage per environment (dev, staging, prod), checked by cdk-nag."""

from aws_cdk import App

from infra.stage import build_app

app = App()
build_app(app)
app.synth()
