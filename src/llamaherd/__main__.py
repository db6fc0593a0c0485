from llamaherd.client.cli import main

raise SystemExit(main())
