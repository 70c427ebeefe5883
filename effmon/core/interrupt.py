"""Whether an exception is a Ctrl-C. No imports: the entry point reads it before anything else loads."""


def by_interrupt(exc: BaseException | None) -> bool:
    """Whether ``exc`` is, or was caused by, a ``KeyboardInterrupt``. Python 3.11 wraps one raised while a class is
    being built (``__set_name__``, e.g. in the middle of an import) in a ``RuntimeError`` whose cause it is."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, KeyboardInterrupt):
            return True
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return False
