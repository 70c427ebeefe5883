from effmon.entry import run

raise SystemExit(run())
