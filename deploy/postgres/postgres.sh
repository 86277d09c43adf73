#!/usr/bin/env bash
# A local PostgreSQL server for the audit trail's tests (and a try-out): Debian's
# packages, installed when missing; a cluster in PG_DATA_DIR on PG_PORT.
#   PG_DATA_DIR=/tmp/pg PG_PORT=15432 bash deploy/postgres/postgres.sh start|stop
set -euo pipefail
cmd=${1:?start or stop}
data=${PG_DATA_DIR:?set PG_DATA_DIR}
port=${PG_PORT:-15432}

bindir() {
  local found
  found=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)
  if [ -z "$found" ]; then
    echo "postgres.sh: installing Debian's postgresql package" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql) >&2
    found=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
  fi
  echo "$found"
}

# initdb and the server refuse to run as root: they run as the postgres account then.
as_owner() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

bin=$(bindir)
case "$cmd" in
  start)
    mkdir -p "$data"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$data"; fi
    if [ ! -f "$data/PG_VERSION" ]; then
      as_owner "$bin/initdb" -D "$data" -U lockstep --auth=trust -E UTF8 >/dev/null
    fi
    as_owner "$bin/pg_ctl" -D "$data" -l "$data/server.log" -w -t 60 \
      -o "-p $port -k $data -c listen_addresses=127.0.0.1" start >/dev/null
    as_owner "$bin/createdb" -h 127.0.0.1 -p "$port" -U lockstep lockstep 2>/dev/null || true
    echo "postgresql://lockstep@127.0.0.1:$port/lockstep"
    ;;
  stop)
    as_owner "$bin/pg_ctl" -D "$data" -m fast -w stop >/dev/null || true
    ;;
  *)
    echo "postgres.sh: unknown command $cmd (start or stop)" >&2
    exit 2
    ;;
esac
