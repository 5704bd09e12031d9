"""Load harness: protocol clients that drive any server and measure it (imports no server internals)."""
