# shellcheck shell=bash
# SPDX-License-Identifier: GPL-3.0-or-later
# A private PostgreSQL 15 instance for the tests (Debian package postgresql): its own data
# directory and loopback port, trust authentication on 127.0.0.1, stopped by the PID in its
# postmaster.pid. PostgreSQL refuses to run as root: as root the server runs as the
# postgres user (runuser); as another user, as that user. Source it from bash:
#
#     . tests/e2e/lib_pg.sh
#
#   pg_start DIR PORT [DB]   initdb + start, create database DB (default pec); prints the
#                            connection URL postgres://postgres@127.0.0.1:PORT/DB
#   pg_createdb DIR PORT DB  another database on the same instance
#   pg_stop DIR              fast shutdown by PID, waits for the server to exit
#   pg_restart DIR           starts again a server that pg_start set up in DIR and pg_stop
#                            stopped (same port and options)
#   e2e_store_toml WORK DB   the keys of [store] for the store the end-to-end suite runs
#                            on: PEC_E2E_STORE=sqlite (the default) gives WORK/DB.sqlite;
#                            PEC_E2E_STORE=pg the database DB of a private PostgreSQL in
#                            WORK/pg, started by the first call (stop it with pg_stop WORK/pg;
#                            needs lib.sh)
#
# Environment: PG_BIN (default /usr/lib/postgresql/15/bin), PG_OPTS (extra server options,
# e.g. "-c fsync=off" for a scratch instance), PG_DEADLINE (seconds to start or stop,
# default 60), PG_SSL_CERT and PG_SSL_KEY (PEM files: the server runs with ssl = on and
# that certificate, and accepts TCP connections over TLS only, pg_hba hostssl),
# PG_SSL_CLIENT_CA (with PG_SSL_CERT: a PEM CA file; TCP connections are then authenticated
# by a client certificate it signed, pg_hba "hostssl … cert", whose CN is the user name).

PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
PG_DEADLINE=${PG_DEADLINE:-60}

_pg_as() {
  if [ "$(id -u)" -eq 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

pg_start() {
  local dir=$1 port=$2 db=${3:-pec}
  if [ ! -x "$PG_BIN/initdb" ]; then
    echo "pg_start: $PG_BIN/initdb not found (install the Debian package postgresql)" >&2
    return 1
  fi
  mkdir -p "$dir"
  [ "$(id -u)" -ne 0 ] || chown postgres: "$dir"
  if ! _pg_as "$PG_BIN/initdb" -D "$dir/data" -A trust -U postgres -E UTF8 --locale=C.UTF-8 \
      >"$dir/initdb.log" 2>&1; then
    echo "pg_start: initdb failed:" >&2
    tail -n 20 "$dir/initdb.log" >&2
    return 1
  fi
  local ssl=""
  if [ -n "${PG_SSL_CERT:-}" ]; then
    cp "$PG_SSL_CERT" "$dir/data/server.crt"
    cp "$PG_SSL_KEY" "$dir/data/server.key"
    chmod 600 "$dir/data/server.key"
    [ "$(id -u)" -ne 0 ] || chown postgres: "$dir/data/server.crt" "$dir/data/server.key"
    local auth=trust
    ssl="-c ssl=on"
    if [ -n "${PG_SSL_CLIENT_CA:-}" ]; then
      cp "$PG_SSL_CLIENT_CA" "$dir/data/client-ca.crt"
      [ "$(id -u)" -ne 0 ] || chown postgres: "$dir/data/client-ca.crt"
      auth=cert
      ssl="$ssl -c ssl_ca_file=client-ca.crt"
    fi
    printf '%s\n' "local all all trust" "hostssl all all 127.0.0.1/32 $auth" \
      "hostssl all all ::1/128 $auth" > "$dir/data/pg_hba.conf"
  fi
  printf '%s\n' "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir -c max_connections=200 $ssl ${PG_OPTS:-}" \
    > "$dir/options"
  # shellcheck disable=SC2086
  if ! _pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$PG_DEADLINE" \
      -o "$(cat "$dir/options")" start >"$dir/pg_ctl.log" 2>&1; then
    echo "pg_start: the server did not start:" >&2
    tail -n 20 "$dir/server.log" >&2
    return 1
  fi
  printf '%s\n' "$port" > "$dir/port"
  pg_createdb "$dir" "$port" "$db" || return 1
  echo "postgres://postgres@127.0.0.1:$port/$db"
}

pg_restart() {
  local dir=$1
  if ! _pg_as "$PG_BIN/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t "$PG_DEADLINE" \
      -o "$(cat "$dir/options")" start >>"$dir/pg_ctl.log" 2>&1; then
    echo "pg_restart: the server did not start:" >&2
    tail -n 20 "$dir/server.log" >&2
    return 1
  fi
}

e2e_store_toml() {
  local work=$1 db=$2 port
  case ${PEC_E2E_STORE:-sqlite} in
    sqlite) printf 'path = "%s/%s.sqlite"\n' "$work" "$db" ;;
    pg)
      if [ -f "$work/pg/port" ]; then
        port=$(cat "$work/pg/port")
        pg_createdb "$work/pg" "$port" "$db" || return 1
      else
        port=$(e2e_free_ports 1)
        pg_start "$work/pg" "$port" "$db" >/dev/null || return 1
      fi
      printf 'backend = "postgres"\nurl = "postgres://postgres@127.0.0.1:%s/%s"\n' "$port" "$db"
      ;;
    *) echo "e2e_store_toml: PEC_E2E_STORE must be sqlite or pg, not \"$PEC_E2E_STORE\"" >&2; return 1 ;;
  esac
}

pg_createdb() {
  local dir=$1 port=$2 db=$3
  _pg_as "$PG_BIN/psql" -h "$dir" -p "$port" -U postgres -v ON_ERROR_STOP=1 -q \
    -c "CREATE DATABASE \"$db\"" postgres >/dev/null
}

pg_stop() {
  local dir=$1 pid deadline
  [ -f "$dir/data/postmaster.pid" ] || return 0
  pid=$(head -n 1 "$dir/data/postmaster.pid")
  [ -n "$pid" ] || return 0
  kill -INT "$pid" 2>/dev/null || return 0
  deadline=$((SECONDS + PG_DEADLINE))
  while kill -0 "$pid" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "pg_stop: server $pid still running after ${PG_DEADLINE}s" >&2
      return 1
    fi
    sleep 0.05
  done
}
