from accounts.cli import main

raise SystemExit(main())
