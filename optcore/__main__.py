"""``python -m optcore``: the command-line interface."""

from optcore.cli import main

raise SystemExit(main())
