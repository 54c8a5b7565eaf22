"""``python -m models predict ...``: the predict command without the cabinet's CLI."""

from models.cli import main

raise SystemExit(main())
