"""The durable queue: repository, scheduler and delivery dispatch."""
