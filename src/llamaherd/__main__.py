from llamaherd.cli import main

raise SystemExit(main())
