"""Built-in data sources. Each registers through the public plugin hook (see ``builtin``)."""
