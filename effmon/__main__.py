from effmon.cli import main

raise SystemExit(main())
