#!/bin/sh
# start_server.sh KIND DIR [extra server args...]
# Starts redis-server or memcached on a free 127.0.0.1 port with throw-away
# settings, waits until it answers, and prints "PID PORT". The caller stops
# it by that PID. PIDs are also appended to $CACHY_PIDFILE when set, so the
# test runner can stop what a crashed spec left behind. KIND redis-cluster:
# a Redis Cluster node, whose port + 10000 (its cluster bus) is free too,
# with its nodes file in DIR. KIND sentinel, then MASTER-NAME MASTER-PORT
# QUORUM: a Redis Sentinel watching that master (1 s down-after), its
# config file (which it rewrites) in DIR.
set -eu
kind=$1 dir=$2
shift 2
mkdir -p "$dir"
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
# A port p from 20000 to 55535 with p and p + 10000 both free.
free_bus_port() {
  python3 -c '
import random, socket
while True:
    p = random.randint(20000, 55535)
    try:
        for q in (p, p + 10000):
            s = socket.socket(); s.bind(("127.0.0.1", q)); s.close()
        print(p); break
    except OSError:
        pass'
}
for attempt in 1 2 3 4 5; do
  if [ "$kind" = redis-cluster ]; then port=$(free_bus_port); else port=$(free_port); fi
  case $kind in
    sentinel)
      conf="$dir/sentinel-$port.conf"
      printf 'port %s\nbind 127.0.0.1\ndir %s\nsentinel monitor %s 127.0.0.1 %s %s\nsentinel down-after-milliseconds %s 1000\nsentinel failover-timeout %s 1500\n' \
        "$port" "$dir" "$1" "$2" "$3" "$1" "$1" >"$conf"
      redis-server "$conf" --sentinel >"$dir/sentinel-$port.log" 2>&1 &
      pid=$! ;;
    redis-cluster)
      # replicas write the master's data to disk as they sync: one file each,
      # none left from an earlier cluster's node on this port
      rm -f "$dir/nodes-$port.conf" "$dir/dump-$port.rdb"
      redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --dbfilename "dump-$port.rdb" --daemonize no --cluster-enabled yes \
        --cluster-config-file "nodes-$port.conf" "$@" >"$dir/redis-$port.log" 2>&1 &
      pid=$! ;;
    redis)
      command -v redis-server >/dev/null || { echo "redis-server is not installed" >&2; exit 1; }
      redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$dir" --daemonize no "$@" >"$dir/redis-$port.log" 2>&1 &
      pid=$! ;;
    memcached)
      command -v memcached >/dev/null || { echo "memcached is not installed" >&2; exit 1; }
      memcached -l 127.0.0.1 -p "$port" -U 0 -u root -m 64 "$@" >"$dir/memcached-$port.log" 2>&1 &
      pid=$! ;;
    *) echo "unknown server kind $kind" >&2; exit 2 ;;
  esac
  [ -n "${CACHY_PIDFILE:-}" ] && echo "$pid" >>"$CACHY_PIDFILE"
  i=0
  while [ $i -lt 100 ]; do
    if ! kill -0 "$pid" 2>/dev/null; then break; fi
    if python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1",int(sys.argv[1])),0.2).close()' "$port" 2>/dev/null; then
      echo "$pid $port"
      exit 0
    fi
    i=$((i + 1))
    sleep 0.05
  done
  kill "$pid" 2>/dev/null || true
done
echo "could not start $kind" >&2
exit 1
