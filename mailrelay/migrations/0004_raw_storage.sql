-- Message bodies are mostly base64 or already compressed: pglz spends CPU on every write
-- for little gain. Store them out of line without compression (EXTERNAL).
alter table messages alter column raw set storage external;
