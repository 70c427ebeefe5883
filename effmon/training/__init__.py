"""Training: launching an instrumented training command or preset (``effmon run``)."""
