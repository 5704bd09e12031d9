"""Admin CLI: the service API as subcommands."""
