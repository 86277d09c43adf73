#!/usr/bin/env bash
# Run a real single-node Apache Kafka broker (KRaft, broker+controller in one
# JVM) on loopback, assembled from Maven Central jars: no tarball, no Docker.
#
#   bash deploy/kafka/kafka.sh start|stop|status|bootstrap|clean
#
# Environment:
#   KAFKA_PORT             client port (default 9092)
#   KAFKA_CONTROLLER_PORT  KRaft controller port (default KAFKA_PORT+1)
#   KAFKA_DATA_DIR         config, storage, logs, pid (default /tmp/lockstep-kafka-$KAFKA_PORT)
#   KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS  wait for more group members (default 0)
#   LOCKSTEP_KAFKA_LIBS    jar cache (default ~/.cache/lockstep/kafka-libs-<version>)
#   KAFKA_HEAP_OPTS        JVM heap (default "-Xms256m -Xmx768m")
#   KAFKA_START_TIMEOUT    seconds to wait for the broker to answer (default 90)
#   KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM before SIGKILL (default 30)
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
POM="$HERE/pom.xml"
# The POM is the single source of truth for the version (names the jar cache).
KAFKA_VERSION="$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM" | head -n1)"

KAFKA_PORT="${KAFKA_PORT:-9092}"
KAFKA_CONTROLLER_PORT="${KAFKA_CONTROLLER_PORT:-$((KAFKA_PORT + 1))}"
DATA="${KAFKA_DATA_DIR:-/tmp/lockstep-kafka-$KAFKA_PORT}"
LIBS="${LOCKSTEP_KAFKA_LIBS:-$HOME/.cache/lockstep/kafka-libs-$KAFKA_VERSION}"
HEAP_OPTS="${KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
START_TIMEOUT="${KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${KAFKA_STOP_TIMEOUT:-30}"
JAVA="${JAVA_HOME:+$JAVA_HOME/bin/}java"

PIDFILE="$DATA/kafka.pid"
LOGFILE="$DATA/server.log"     # broker log4j output
OUTFILE="$DATA/kafka.out"      # JVM stdout/stderr (crashes, early errors)

log() { echo "kafka.sh: $*" >&2; }
die() { log "$*"; exit 1; }

# --- jars -----------------------------------------------------------------

fetch_libs() {
  [[ -d "$LIBS" ]] && return 0
  command -v mvn >/dev/null || die "mvn not found (needed once to fetch Kafka $KAFKA_VERSION jars)"
  log "fetching Kafka $KAFKA_VERSION jars into $LIBS (one time)"
  mkdir -p "$(dirname "$LIBS")"
  # Fetch into a temp dir beside the cache and rename it at the end, so an
  # interrupted fetch never looks like a complete cache.
  local tmp
  tmp="$(mktemp -d "$LIBS.tmp.XXXXXX")"
  # shellcheck disable=SC2064  # expand $tmp now: it is local to this function
  trap "rm -rf '$tmp' '$tmp.mvn.log'" EXIT   # also on Ctrl-C
  # Maven's output is kept aside and shown only on failure (-q still prints
  # stray ANSI resets).
  if ! mvn -q -B -f "$POM" dependency:copy-dependencies \
      -DoutputDirectory="$tmp" >"$tmp.mvn.log" 2>&1; then
    sed 's/\x1b\[[0-9;]*m//g' "$tmp.mvn.log" >&2
    rm -rf "$tmp" "$tmp.mvn.log"
    die "maven could not fetch the Kafka jars"
  fi
  rm -f "$tmp.mvn.log"
  chmod 755 "$tmp"   # mktemp made it 0700
  # mv -T fails instead of nesting if a concurrent start already made the cache.
  mv -T "$tmp" "$LIBS" 2>/dev/null || rm -rf "$tmp"
  trap - EXIT
}

# --- process helpers --------------------------------------------------------

# kill -0 also succeeds on a zombie (exited, not yet reaped); count it as dead.
alive() {
  kill -0 "$1" 2>/dev/null || return 1
  [[ -r "/proc/$1/stat" ]] || return 0
  [[ "$(cut -d' ' -f3 "/proc/$1/stat")" != Z ]]
}

# Pid of the broker of this data dir, if it is alive; checks the command line
# so a stale pid file whose pid was reused by another process is ignored.
broker_pid() {
  [[ -f "$PIDFILE" ]] || return 1
  local pid
  pid="$(cat "$PIDFILE" 2>/dev/null)" || return 1
  [[ "$pid" =~ ^[0-9]+$ ]] && alive "$pid" || return 1
  if [[ -r "/proc/$pid/cmdline" ]]; then
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF "$DATA/server.properties" || return 1
  fi
  echo "$pid"
}

# True when the broker answers a Kafka Metadata request (v4, no topics) listing
# at least one live broker. That is stronger than an open port: the broker only
# lists itself once it is registered and unfenced, i.e. usable by clients.
# Speaks the wire protocol from bash, so no JVM start per probe.
answers() {
  local reply
  # shellcheck disable=SC2016  # $1 is expanded by the inner bash
  reply="$(timeout 3 bash -c '
    exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
    # size=20 | api_key=3 (Metadata) | version=4 | correlation_id=7 |
    # client_id="probe" | topics=[] | allow_auto_topic_creation=false
    printf "\x00\x00\x00\x14\x00\x03\x00\x04\x00\x00\x00\x07\x00\x05probe\x00\x00\x00\x00\x00" >&3
    head -c 16 <&3' _ "$KAFKA_PORT" 2>/dev/null | od -An -v -tu1 | tr -s ' \n' ' ')" || return 1
  # Reply: size(4) correlation_id(4)=7 throttle_ms(4) broker_count(4) ...
  local -a b
  read -r -a b <<<"$reply"
  [[ ${#b[@]} -eq 16 ]] || return 1
  [[ "${b[4]} ${b[5]} ${b[6]} ${b[7]}" == "0 0 0 7" ]] || return 1
  (( (b[12] << 24 | b[13] << 16 | b[14] << 8 | b[15]) >= 1 ))
}

show_log() {
  # The cause (e.g. "Address already in use") sits in the first ERRORs; the
  # tail is mostly shutdown noise after it.
  if grep -qE '\] (ERROR|FATAL) ' "$LOGFILE" 2>/dev/null; then
    log "--- first errors in $LOGFILE ---"
    grep -m3 -A1 -E '\] (ERROR|FATAL) ' "$LOGFILE" | cut -c1-300 >&2 || true
  fi
  log "--- last lines of $LOGFILE ---"
  tail -n 15 "$LOGFILE" 2>/dev/null | cut -c1-300 >&2 || true
  if [[ -s "$OUTFILE" ]]; then
    log "--- last lines of $OUTFILE ---"
    tail -n 10 "$OUTFILE" >&2 || true
  fi
}

fail_start() { log "$1"; show_log; exit 1; }

# --- config -----------------------------------------------------------------

write_config() {
  mkdir -p "$DATA"
  # Rewritten on every start so edits here apply; identity lives in meta.properties.
  cat >"$DATA/server.properties" <<EOF
# Written by deploy/kafka/kafka.sh: single KRaft node on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$KAFKA_CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DATA/kraft-logs
# One node: every internal topic has exactly one replica.
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# 4 instead of 50 __consumer_offsets partitions: faster restarts, same behaviour.
offsets.topic.num.partitions=4
# Tests: consumer groups form at once. Benchmarks use Kafka's production default (3 s),
# so workers started together join one initial rebalance.
group.initial.rebalance.delay.ms=${KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS:-0}
num.partitions=2
auto.create.topics.enable=true
EOF

  # Broker logs go to a file, truncated per start, never to the terminal.
  cat >"$DATA/log4j.properties" <<EOF
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.FileAppender
log4j.appender.file.File=$LOGFILE
log4j.appender.file.Append=false
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.request.logger=WARN
log4j.logger.kafka.log.LogCleaner=WARN
EOF
  # The one-shot tools (StorageTool) only need warnings, on stderr.
  cat >"$DATA/tools-log4j.properties" <<EOF
log4j.rootLogger=WARN, stderr
log4j.appender.stderr=org.apache.log4j.ConsoleAppender
log4j.appender.stderr.Target=System.err
log4j.appender.stderr.layout=org.apache.log4j.PatternLayout
log4j.appender.stderr.layout.ConversionPattern=[%d] %p %m (%c)%n
EOF
}

run_tool() {
  "$JAVA" -Xmx256m -Dlog4j.configuration="file:$DATA/tools-log4j.properties" \
    -cp "$LIBS/*" "$@"
}

# KRaft storage must be formatted once with a cluster id before the first start.
format_storage() {
  [[ -f "$DATA/kraft-logs/meta.properties" ]] && return 0
  local cluster_id
  cluster_id="$(run_tool kafka.tools.StorageTool random-uuid)"
  log "formatting storage in $DATA/kraft-logs (cluster id $cluster_id)"
  run_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$DATA/server.properties" >/dev/null
}

# --- commands -----------------------------------------------------------------

wait_ready() {
  local pid="$1" deadline=$((SECONDS + START_TIMEOUT))
  until answers; do
    alive "$pid" || { rm -f "$PIDFILE"; fail_start "broker exited during startup (port $KAFKA_PORT or $KAFKA_CONTROLLER_PORT in use?)"; }
    if (( SECONDS >= deadline )); then
      log "broker (pid $pid) did not answer on 127.0.0.1:$KAFKA_PORT within ${START_TIMEOUT}s; stopping it"
      show_log
      cmd_stop   # leave no half-started broker behind a failed start
      exit 1
    fi
    sleep 0.5
  done
}

cmd_start() {
  local pid
  if pid="$(broker_pid)"; then
    # Already ours and running: done at once, or wait if it is still starting.
    answers && return 0
    wait_ready "$pid"
    return 0
  fi
  rm -f "$PIDFILE"
  # Another broker on our port would make the readiness probe lie.
  answers && die "another Kafka already answers on 127.0.0.1:$KAFKA_PORT (not the one of $DATA)"
  fetch_libs
  write_config
  format_storage

  # setsid: the broker outlives this shell and ignores Ctrl-C sent to it.
  # G1 flags as in Kafka's own kafka-run-class.sh.
  # shellcheck disable=SC2086
  nohup setsid "$JAVA" $HEAP_OPTS \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 \
    -XX:+ExplicitGCInvokesConcurrent -Djava.awt.headless=true \
    -Dlog4j.configuration="file:$DATA/log4j.properties" \
    -cp "$LIBS/*" kafka.Kafka "$DATA/server.properties" \
    >"$OUTFILE" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDFILE"
  wait_ready "$pid"
  log "broker $KAFKA_VERSION up at 127.0.0.1:$KAFKA_PORT (pid $pid, data $DATA)"
}

cmd_stop() {
  local pid
  if ! pid="$(broker_pid)"; then
    rm -f "$PIDFILE"
    return 0
  fi
  # SIGTERM runs Kafka's clean shutdown (flushes logs, no recovery next start).
  kill -TERM "$pid" 2>/dev/null || true
  local deadline=$((SECONDS + STOP_TIMEOUT))
  while alive "$pid" && (( SECONDS < deadline )); do
    sleep 0.2
  done
  if alive "$pid"; then
    log "broker (pid $pid) ignored SIGTERM for ${STOP_TIMEOUT}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    deadline=$((SECONDS + 10))
    while alive "$pid" && (( SECONDS < deadline )); do sleep 0.1; done
  fi
  rm -f "$PIDFILE"
}

cmd_status() {
  local pid
  if pid="$(broker_pid)" && answers; then
    echo "running: pid $pid, 127.0.0.1:$KAFKA_PORT, data $DATA"
    return 0
  fi
  echo "not running (127.0.0.1:$KAFKA_PORT, data $DATA)"
  return 1
}

cmd_clean() {
  cmd_stop
  # Guard against wiping something unexpected through a bad KAFKA_DATA_DIR.
  [[ -n "$DATA" && "$DATA" != "/" && "$DATA" != "$HOME" ]] || die "refusing to delete '$DATA'"
  rm -rf "$DATA"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop ;;
  status) cmd_status ;;
  bootstrap) echo "127.0.0.1:$KAFKA_PORT" ;;
  clean) cmd_clean ;;
  *) echo "usage: $0 start|stop|status|bootstrap|clean" >&2; exit 2 ;;
esac
