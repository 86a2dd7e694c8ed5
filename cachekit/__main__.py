"""`python -m cachekit`: the operator command line (see `cachekit.cli`)."""

from cachekit.cli import main

raise SystemExit(main())
