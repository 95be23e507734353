"""Continuous WAL protection and point-in-time restore, on PostgreSQL's own tools.

``pg_receivewal`` streams the server's WAL over a replication connection into a spool folder; each completed
segment is compressed, encrypted, checksummed and stored at the destinations with a signed entry
(``archive``); ``pg_basebackup`` base backups, checked with ``pg_verifybackup``, are stored the same way with
the WAL range they need (``basebackup``). A restore to a second T puts the base backup before T into a scratch
data directory and replays the archived WAL to T with a scratch postmaster of the server's major version
(``scratch``, ``recover``).
"""
