from onconode.cli import main

raise SystemExit(main())
