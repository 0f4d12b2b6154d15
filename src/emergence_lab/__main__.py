from emergence_lab.cli import main

raise SystemExit(main())
