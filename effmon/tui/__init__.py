"""The Textual dashboard: a thin view over a session (``effmon.tui.snapshot``). Only this package imports Textual."""
