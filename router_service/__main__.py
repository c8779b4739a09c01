"""`python -m router_service` is `llm-router`."""

import sys

from router_service.cli import main

sys.exit(main())
