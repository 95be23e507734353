"""The streaming standbys of a PostgreSQL server, as its pg_stat_replication shows them: state and lag.

Read as the role the engine connects with: a superuser, or a role granted ``pg_monitor``
(``pg_read_all_stats``), sees every column; any other role sees that a standby exists but not its position,
which is said rather than shown as zero lag.
"""

from dataclasses import asdict, dataclass

from . import pg


@dataclass
class Standby:
    """One WAL sender's peer: a standby (or a pg_receivewal / pg_basebackup) streaming from the server."""

    name: str
    client: str
    state: str
    sync_state: str
    sent_lag_bytes: int | None
    replay_lag_bytes: int | None
    replay_lag_seconds: float | None

    @property
    def visible(self):
        """False when the connecting role may not see the standby's positions (they all read NULL)."""
        return self.sent_lag_bytes is not None

    def as_dict(self):
        return dict(asdict(self), visible=self.visible)


def standbys(pgc, dbname=None):
    """[Standby] of the server ``pgc`` reaches, in the order of their WAL senders."""
    with pg.cursor(pgc, dbname or pgc.maintenance_db) as cr:
        cr.execute(
            """SELECT application_name, coalesce(host(client_addr), 'local socket'), coalesce(state, ''),
                      coalesce(sync_state, ''),
                      pg_wal_lsn_diff(pg_current_wal_lsn(), sent_lsn)::bigint,
                      pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::bigint,
                      extract(epoch FROM replay_lag)::float8
                 FROM pg_stat_replication ORDER BY pid"""
        )
        return [Standby(*row) for row in cr.fetchall()]


def lagging(found, max_lag_seconds, max_lag_bytes):
    """The standbys past a limit, not streaming, or whose position this role cannot see: [(standby, why)]. Pure."""
    late = []
    for standby in found:
        if standby.state != "streaming":
            late.append((standby, "it is %s, not streaming" % (standby.state or "in no state")))
        elif not standby.visible:
            late.append((standby, "its position is hidden from this role (grant it pg_monitor)"))
        elif standby.replay_lag_bytes is None:
            late.append((standby, "it has not reported what it replayed yet"))
        elif standby.replay_lag_bytes > max_lag_bytes:
            late.append((standby, "it replays %d bytes behind" % standby.replay_lag_bytes))
        elif (standby.replay_lag_seconds or 0.0) > max_lag_seconds:
            late.append((standby, "it replays %.1f s behind" % standby.replay_lag_seconds))
    return late
