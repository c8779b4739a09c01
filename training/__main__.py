"""``python -m training train|evaluate ...``, until ``llm-router`` carries the subcommands."""

from training.cli import main

raise SystemExit(main())
