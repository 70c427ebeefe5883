try:
    from effmon.entry import run
except KeyboardInterrupt:  # a Ctrl-C in the first milliseconds, before the entry point's own handling
    import sys

    sys.stderr.write("effmon: interrupted\n")
    raise SystemExit(130) from None

raise SystemExit(run())
