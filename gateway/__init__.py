"""Gateway: the one process (config, database, listeners, CLI) that hosts everything."""
