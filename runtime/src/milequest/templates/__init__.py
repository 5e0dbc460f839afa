"""Email templates: one folder per template with ``subject.hbs``, ``html.hbs`` and ``text.hbs``.

Written in the Handlebars subset SES supports; the runtime renders them locally and the
CDK app deploys the same files as SES templates.
"""
