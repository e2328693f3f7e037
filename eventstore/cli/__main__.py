"""``python -m eventstore.cli``: the same as the ``clerk-audit`` script."""

from eventstore.cli import cli

cli()
