"""``python -m milequest.costs``: see :mod:`milequest.costs.cli`."""

from .cli import main

raise SystemExit(main())
