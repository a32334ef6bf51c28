from abi.cli import main

raise SystemExit(main())
