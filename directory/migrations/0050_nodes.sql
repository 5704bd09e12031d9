-- Every gateway process sharing this database registers a row and renews `heartbeat`.
-- A node whose heartbeat is older than node.dead_seconds is dead for everyone, on any host:
-- whatever it leased (queue rows, later XMPP sessions) is taken over by the survivors.
-- Other tables name their owner by `nodes.id` (no foreign key: an owner row is deleted
-- before or after its leases are released, in either order).
create table nodes (
    id          text primary key,               -- "<host>:<pid>:<random>"
    host        text not null,
    pid         int not null,
    started     timestamptz not null default now(),
    heartbeat   timestamptz not null default now()
);
create index nodes_heartbeat on nodes(heartbeat);
