from cadbench.cli import main

raise SystemExit(main())
