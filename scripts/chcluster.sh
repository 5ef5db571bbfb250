#!/usr/bin/env bash
# chcluster.sh — a local ClickHouse cluster for the archiver's cluster tests.
#
#   scripts/chcluster.sh start   start (or find running) ZooKeeper and three
#                                clickhouse-server processes; print the env
#   scripts/chcluster.sh env     print the env the tests read (export lines)
#   scripts/chcluster.sh status  say what is running
#   scripts/chcluster.sh stop    stop them and delete their data
#
# It does not touch the system ClickHouse (port 9000) or a system ZooKeeper:
# ZooKeeper (Debian's `zookeeper` package, run directly with java) and the
# servers get their own configs, data, logs and pid files under $DIR, and
# listen on 127.0.0.1 only. The servers' configs are the system config.xml
# and users.xml with ports, paths, <zookeeper>, <remote_servers> and
# <macros> replaced (config.d/cluster.xml).
#
# Topology: one cluster, fw_2shards, of three servers, so that one cluster
# exercises both sharding and replication (macros are per server: two
# servers give either two shards or two replicas, not both):
#
#   shard 1: node1 (macros shard=01 replica=r1)
#   shard 2: node2 (shard=02 replica=r2) and node3 (shard=02 replica=r3)
#
# Every shard has internal_replication: a Distributed insert goes to one
# replica of a shard and ReplicatedMergeTree copies it to the other.
#
# Env: FLEETWATCH_CHCLUSTER_DIR (default /tmp/fleetwatch-chcluster),
# FLEETWATCH_CHCLUSTER_PORT_BASE (default 19100: ZooKeeper on base+81, node
# N native port base+10N, http base+10N+1, interserver base+10N+2).
set -euo pipefail

DIR=${FLEETWATCH_CHCLUSTER_DIR:-/tmp/fleetwatch-chcluster}
BASE=${FLEETWATCH_CHCLUSTER_PORT_BASE:-19100}
SYS_CONFIG=${FLEETWATCH_CHCLUSTER_SYSTEM_CONFIG:-/etc/clickhouse-server}
ZK_PORT=$((BASE + 81))
NODES=(1 2 3)
CLUSTER=fw_2shards
START_TIMEOUT=${FLEETWATCH_CHCLUSTER_START_TIMEOUT:-60} # seconds, per component

log() { echo "chcluster: $*" >&2; }
die() {
  log "error: $*"
  exit 1
}

tcp_port() { echo $((BASE + 10 * $1)); }
http_port() { echo $((BASE + 10 * $1 + 1)); }
interserver_port() { echo $((BASE + 10 * $1 + 2)); }
shard_of() { if [ "$1" = 1 ]; then echo 01; else echo 02; fi; }

addrs() {
  local out="" n
  for n in "${NODES[@]}"; do out+="${out:+,}127.0.0.1:$(tcp_port "$n")"; done
  echo "$out"
}

print_env() {
  echo "export FLEETWATCH_CLICKHOUSE_CLUSTER_ADDRS=$(addrs)"
  echo "export FLEETWATCH_CLICKHOUSE_CLUSTER=$CLUSTER"
}

# alive PIDFILE: the pid in PIDFILE is a running process.
alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# port_busy PORT: something listens on 127.0.0.1:PORT.
port_busy() { (exec 2>/dev/null 3<>"/dev/tcp/127.0.0.1/$1"); }

# launch PIDFILE LOG CMD...: run CMD in its own session, detached from this
# shell, and record its pid.
launch() {
  local pidfile=$1 logfile=$2
  shift 2
  nohup setsid "$@" >"$logfile" 2>&1 </dev/null &
  echo $! >"$pidfile"
}

zk_ruok() {
  local reply
  reply=$(
    exec 2>/dev/null
    exec 3<>"/dev/tcp/127.0.0.1/$ZK_PORT" || exit 1
    printf ruok >&3
    timeout 2 cat <&3
  ) || return 1
  [ "$reply" = imok ]
}

ch_ok() { clickhouse-client --host 127.0.0.1 --port "$(tcp_port "$1")" --query 'SELECT 1' >/dev/null 2>&1; }

# wait_for WHAT PIDFILE LOG CHECK...: poll CHECK until it succeeds, the
# process exits, or START_TIMEOUT passes.
wait_for() {
  local what=$1 pidfile=$2 logfile=$3
  shift 3
  local deadline=$((SECONDS + START_TIMEOUT))
  until "$@"; do
    if ! alive "$pidfile"; then
      log "$what exited during start; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      exit 1
    fi
    if ((SECONDS >= deadline)); then
      log "$what did not answer within ${START_TIMEOUT}s; last lines of $logfile:"
      tail -n 30 "$logfile" >&2 || true
      exit 1
    fi
    sleep 0.2
  done
}

need() { command -v "$1" >/dev/null 2>&1 || die "$1 not found: $2"; }

zk_jar() {
  local j
  for j in /usr/share/java/zookeeper.jar /usr/share/zookeeper/zookeeper.jar; do
    [ -f "$j" ] && { echo "$j"; return; }
  done
  die "ZooKeeper is not installed (no /usr/share/java/zookeeper.jar): apt-get install -y zookeeper"
}

start_zk() {
  local d=$DIR/zk pidfile=$DIR/zk/zk.pid
  if alive "$pidfile" && zk_ruok; then
    log "zookeeper already running on 127.0.0.1:$ZK_PORT (pid $(cat "$pidfile"))"
    return
  fi
  alive "$pidfile" || ! port_busy "$ZK_PORT" ||
    die "port $ZK_PORT is taken by another process: set FLEETWATCH_CHCLUSTER_PORT_BASE to a free range"
  if ! alive "$pidfile"; then
    local jar
    jar=$(zk_jar)
    need java "install a JRE (apt-get install -y zookeeper pulls one)"
    mkdir -p "$d/data"
    cat >"$d/zoo.cfg" <<EOF
tickTime=2000
initLimit=10
syncLimit=5
dataDir=$d/data
clientPort=$ZK_PORT
clientPortAddress=127.0.0.1
maxClientCnxns=0
admin.enableServer=false
4lw.commands.whitelist=ruok,srvr,stat
EOF
    local cp=$jar
    # A logging backend for slf4j when Debian's is installed (else no logs).
    [ -f /usr/share/java/slf4j-simple.jar ] && cp+=:/usr/share/java/slf4j-simple.jar
    launch "$pidfile" "$d/zk.log" java -Xms32m -Xmx256m -XX:+UseSerialGC -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
      -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$d/zoo.cfg"
    log "zookeeper starting on 127.0.0.1:$ZK_PORT (pid $(cat "$pidfile"), log $d/zk.log)"
  fi
}

node_config() {
  local n=$1 d=$DIR/node$1
  mkdir -p "$d/conf/config.d" "$d/conf/users.d" "$d/data" "$d/tmp" "$d/user_files" "$d/format_schemas" "$d/log"
  # The system config without the elements this file replaces: config.d
  # merges by element name and attributes, so an element with other
  # attributes (incl=...) would be added beside the original, not replace it.
  sed -e '/<remote_servers[ >]/,/<\/remote_servers>/d' \
    -e '/<zookeeper[ >].*\/>/d' -e '/<zookeeper[ >]/,/<\/zookeeper>/d' \
    -e '/<macros[ >].*\/>/d' -e '/<macros[ >]/,/<\/macros>/d' \
    "$SYS_CONFIG/config.xml" >"$d/conf/config.xml"
  cp "$SYS_CONFIG/users.xml" "$d/conf/users.xml"
  local replicas23="" m
  for m in 2 3; do
    replicas23+="<replica><host>127.0.0.1</host><port>$(tcp_port "$m")</port></replica>"
  done
  cat >"$d/conf/config.d/cluster.xml" <<EOF
<?xml version="1.0"?>
<!-- Generated by scripts/chcluster.sh: node$n of the local test cluster. -->
<yandex>
    <logger>
        <level>warning</level>
        <log>$d/log/clickhouse-server.log</log>
        <errorlog>$d/log/clickhouse-server.err.log</errorlog>
        <size>100M</size>
        <count>1</count>
    </logger>
    <listen_host>127.0.0.1</listen_host>
    <http_port>$(http_port "$n")</http_port>
    <tcp_port>$(tcp_port "$n")</tcp_port>
    <interserver_http_port>$(interserver_port "$n")</interserver_http_port>
    <interserver_http_host>127.0.0.1</interserver_http_host>
    <path>$d/data/</path>
    <tmp_path>$d/tmp/</tmp_path>
    <user_files_path>$d/user_files/</user_files_path>
    <format_schema_path>$d/format_schemas/</format_schema_path>
    <mark_cache_size>67108864</mark_cache_size>
    <uncompressed_cache_size>67108864</uncompressed_cache_size>
    <max_concurrent_queries>50</max_concurrent_queries>
    <query_log remove="1"/>
    <zookeeper>
        <node><host>127.0.0.1</host><port>$ZK_PORT</port></node>
        <session_timeout_ms>30000</session_timeout_ms>
    </zookeeper>
    <macros>
        <shard>$(shard_of "$n")</shard>
        <replica>r$n</replica>
    </macros>
    <remote_servers>
        <fw_2shards>
            <shard>
                <internal_replication>true</internal_replication>
                <replica><host>127.0.0.1</host><port>$(tcp_port 1)</port></replica>
            </shard>
            <shard>
                <internal_replication>true</internal_replication>
                $replicas23
            </shard>
        </fw_2shards>
    </remote_servers>
</yandex>
EOF
  # Test servers: few background merge threads.
  cat >"$d/conf/users.d/profile.xml" <<EOF
<?xml version="1.0"?>
<yandex>
    <profiles>
        <default>
            <background_pool_size>4</background_pool_size>
            <max_memory_usage>2000000000</max_memory_usage>
        </default>
    </profiles>
</yandex>
EOF
}

start_node() {
  local n=$1 d=$DIR/node$1 pidfile=$DIR/node$1/server.pid port
  port=$(tcp_port "$n")
  if alive "$pidfile" && ch_ok "$n"; then
    log "node$n already running on 127.0.0.1:$port (pid $(cat "$pidfile"))"
    return
  fi
  if ! alive "$pidfile"; then
    local p
    for p in "$port" "$(http_port "$n")" "$(interserver_port "$n")"; do
      ! port_busy "$p" || die "port $p (node$n) is taken by another process: set FLEETWATCH_CHCLUSTER_PORT_BASE to a free range"
    done
    node_config "$n"
    launch "$pidfile" "$d/log/stdout.log" clickhouse-server --config-file="$d/conf/config.xml"
    log "node$n starting on 127.0.0.1:$port (pid $(cat "$pidfile"), logs $d/log)"
  fi
}

# cluster_ok N: node N sees the cluster, its shard macro and ZooKeeper (its
# first ZooKeeper session may fail while ZooKeeper starts: polled). The
# answer is kept in $DIR/node$N/check.txt for the error message.
cluster_ok() {
  local n=$1 got
  got=$(clickhouse-client --host 127.0.0.1 --port "$(tcp_port "$n")" --query \
    "SELECT (SELECT count() FROM system.clusters WHERE cluster = '$CLUSTER'), (SELECT substitution FROM system.macros WHERE macro = 'shard'), (SELECT count() > 0 FROM system.zookeeper WHERE path = '/')" 2>&1)
  echo "$got" >"$DIR/node$n/check.txt"
  [ "$got" = "3	$(shard_of "$n")	1" ]
}

start() {
  need clickhouse-server "apt-get install -y clickhouse-server clickhouse-client"
  need clickhouse-client "apt-get install -y clickhouse-client"
  [ -f "$SYS_CONFIG/config.xml" ] || die "no $SYS_CONFIG/config.xml to derive the node configs from (set FLEETWATCH_CHCLUSTER_SYSTEM_CONFIG)"
  mkdir -p "$DIR"
  local t0=$SECONDS n
  cd "$DIR"
  start_zk
  for n in "${NODES[@]}"; do start_node "$n"; done
  wait_for zookeeper "$DIR/zk/zk.pid" "$DIR/zk/zk.log" zk_ruok
  log "zookeeper ready"
  for n in "${NODES[@]}"; do
    wait_for "node$n" "$DIR/node$n/server.pid" "$DIR/node$n/log/clickhouse-server.err.log" ch_ok "$n"
    wait_for "node$n's cluster config and ZooKeeper session (want: 3 replicas in $CLUSTER, shard $(shard_of "$n"), ZooKeeper readable; got: see $DIR/node$n/check.txt)" \
      "$DIR/node$n/server.pid" "$DIR/node$n/check.txt" cluster_ok "$n"
    log "node$n ready (127.0.0.1:$(tcp_port "$n"), shard $(shard_of "$n"), replica r$n)"
  done
  log "cluster $CLUSTER up in $((SECONDS - t0))s (data in $DIR; stop with: scripts/chcluster.sh stop)"
  print_env
}

stop_pid() {
  local what=$1 pidfile=$2
  alive "$pidfile" || return 0
  local pid
  pid=$(cat "$pidfile")
  kill "$pid" 2>/dev/null || true
  for _ in $(seq 1 300); do
    kill -0 "$pid" 2>/dev/null || { log "$what stopped"; return 0; }
    sleep 0.1
  done
  log "$what (pid $pid) did not stop in 30s; killing it"
  kill -9 "$pid" 2>/dev/null || true
}

stop() {
  local n
  for n in "${NODES[@]}"; do stop_pid "node$n" "$DIR/node$n/server.pid"; done
  stop_pid zookeeper "$DIR/zk/zk.pid"
  # The servers' replicated tables and ZooKeeper's data only make sense
  # together: drop both.
  rm -rf "$DIR"
  log "removed $DIR"
}

status() {
  local n rc=0
  if alive "$DIR/zk/zk.pid" && zk_ruok; then log "zookeeper: running on 127.0.0.1:$ZK_PORT"; else log "zookeeper: not running"; rc=1; fi
  for n in "${NODES[@]}"; do
    if alive "$DIR/node$n/server.pid" && ch_ok "$n"; then log "node$n: running on 127.0.0.1:$(tcp_port "$n")"; else log "node$n: not running"; rc=1; fi
  done
  return $rc
}

case "${1:-}" in
start) start ;;
stop) stop ;;
env) print_env ;;
status) status ;;
*)
  echo "usage: $0 start|stop|env|status" >&2
  exit 2
  ;;
esac
