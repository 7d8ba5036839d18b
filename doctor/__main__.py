"""`python -m doctor [--port N]`: see doctor.cli."""

from doctor.cli import main

raise SystemExit(main())
