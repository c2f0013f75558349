"""``python -m jobmonitor`` runs the same CLI as the ``jobmonitor`` command."""

from .cli.main import main

raise SystemExit(main())
