-- XMPP part 2: personal eventing (XEP-0163 over a minimal XEP-0060 on each account's bare
-- JID) and HTTP file upload slots (XEP-0363). JIDs are normalised bare JID strings.

create table xmpp_pep_node (
    owner   text not null,
    node    text not null,
    config  jsonb not null default '{}',   -- normalised pubsub#* options (xmpp.features.pep.node)
    created timestamptz not null default now(),
    primary key (owner, node)
);

create table xmpp_pep_item (
    owner     text not null,
    node      text not null,
    item_id   text not null,
    payload   text not null,               -- the item's children, serialised (jabber:client default)
    seq       bigserial,                   -- publication order (newest = largest)
    published timestamptz not null default now(),
    primary key (owner, node, item_id),
    foreign key (owner, node) references xmpp_pep_node(owner, node) on delete cascade
);
create index xmpp_pep_item_order_idx on xmpp_pep_item(owner, node, seq);

-- One row per upload slot (XEP-0363 §4); the file lives in <state_dir>/upload/<token>.
create table xmpp_upload (
    token        text primary key,
    owner        text not null,
    filename     text not null,
    size         bigint not null,
    content_type text not null,
    put_secret   text not null,             -- the PUT's Authorization: Bearer value
    created      timestamptz not null default now(),
    uploaded     timestamptz                -- null until the PUT finished
);
create index xmpp_upload_owner_idx on xmpp_upload(owner);
create index xmpp_upload_created_idx on xmpp_upload(created);
