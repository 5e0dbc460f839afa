"""The Mile Quest Services CDK app: one Stage per environment, one module per unit."""
