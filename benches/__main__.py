from r1core.bench.runner import main

raise SystemExit(main())
