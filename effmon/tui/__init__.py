"""The Textual dashboard: a thin view over a session (``effmon.view``). Only this package imports Textual."""
