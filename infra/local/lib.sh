# Shared settings for infra/local/{up,down,kafka-node,kafka-tool}. Sourced, not run.
# Runtime state lives under $ORDERFLOW_LOCAL_DIR (default: .local/ in the repository), so
# several checkouts on one machine do not share state unless told to. Downloaded jars live
# in a cache outside the work tree, so they are fetched once per machine.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
state_dir=${ORDERFLOW_LOCAL_DIR:-$repo_root/.local}
broker_port=${ORDERFLOW_LOCAL_BROKER_PORT:-19092}
pg_port=${ORDERFLOW_LOCAL_PG_PORT:-15432}
pg_replica_port=${ORDERFLOW_LOCAL_PG_REPLICA_PORT:-$((pg_port + 1))}
pg_bin=${ORDERFLOW_PG_BIN:-/usr/lib/postgresql/15/bin}

# The one pinned Apache Kafka version: the broker, its storage formatter and the admin tools
# all come from these jars (a newer formatter can write storage an older broker cannot read).
kafka_version=4.1.1
# Kafka 4.x logs through slf4j-api 1.7, so the backend is log4j-core with the 1.7 binding.
log4j_version=2.24.3
cache_root=${ORDERFLOW_CACHE_DIR:-$HOME/.cache/orderflow}
# The schema registry (`up --schema-registry`): Apicurio Registry's runnable distribution
# from Maven Central, in memory, serving the Confluent-compatible API.
apicurio_version=3.3.3
apicurio_home=$cache_root/apicurio-registry-$apicurio_version
registry_port=${ORDERFLOW_LOCAL_REGISTRY_PORT:-$((broker_port + 2000))}
# The local PostgreSQL database the registry keeps its schemas and ids in.
registry_db=orderflow_registry
kafka_lib=$cache_root/kafka-$kafka_version/lib
# MirrorMaker 2 (`up --regions`): its two jars beside the broker's, same version.
mirror_lib=$cache_root/kafka-$kafka_version/mirror-lib
# The Kafka Connect sink users would otherwise pick for the history (`up --connect-sink`,
# for `orderflow bench`'s C1): Debezium's JDBC sink connector and Apicurio's Avro converter,
# each a plugin directory under $connect_plugins; Connect itself is in $kafka_lib.
debezium_jdbc_version=3.6.0.Final
apicurio_converter_version=2.6.13.Final
connect_plugins=$cache_root/connect-sink-$debezium_jdbc_version-$apicurio_converter_version

# The trace viewer (`up --tracing`): Jaeger v2 (its Go module's v1.x tags), built once per
# machine from source with the machine's Go, in memory, on loopback only.
jaeger_module_version=v1.75.0
jaeger_home=$cache_root/jaeger-$jaeger_module_version
jaeger_otlp_port=${ORDERFLOW_LOCAL_JAEGER_OTLP_PORT:-$((broker_port + 5226))}
jaeger_query_port=${ORDERFLOW_LOCAL_JAEGER_QUERY_PORT:-$((jaeger_otlp_port + 1))}
jaeger_health_port=$((jaeger_otlp_port + 2))
jaeger_grpc_port=$((jaeger_otlp_port + 3))

log() { echo "[infra/local] $*" >&2; }

pid_alive() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# wait_for SECONDS DESCRIPTION COMMAND...: polls COMMAND until it succeeds or time runs out.
wait_for() {
  local deadline=$((SECONDS + $1)) what=$2
  shift 2
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then
      log "timed out waiting for $what"
      return 1
    fi
    sleep 0.2
  done
}

# Commands that touch PostgreSQL's files run as the postgres user when we are root,
# because the server refuses to run as root.
as_pg() {
  if [ "$(id -u)" = 0 ]; then
    runuser -u postgres -- "$@"
  else
    "$@"
  fi
}

# maven_resolve DIR GROUP:ARTIFACT:VERSION...: the artifacts and everything they need at
# runtime, resolved by Maven from Maven Central, copied into DIR.
maven_resolve() {
  local out=$1 work coordinate group artifact version
  shift
  work=$(mktemp -d)
  {
    echo '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
    echo '<groupId>orderflow.local</groupId><artifactId>resolve</artifactId><version>1</version><packaging>pom</packaging><dependencies>'
    for coordinate in "$@"; do
      IFS=: read -r group artifact version <<<"$coordinate"
      echo "<dependency><groupId>$group</groupId><artifactId>$artifact</artifactId><version>$version</version></dependency>"
    done
    echo '</dependencies></project>'
  } >"$work/pom.xml"
  mkdir -p "$out"
  (cd "$work" && mvn -q -B -Dstyle.color=never dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out") >&2
  rm -rf "$work"
}

# Fetches the broker, the admin tools and a logging backend from Maven Central into
# $kafka_lib, once. A marker file written last makes an interrupted fetch start over.
ensure_kafka_jars() {
  if [ -f "$kafka_lib/.complete" ]; then
    return
  fi
  command -v mvn >/dev/null || { log "Maven (mvn) is needed to fetch Apache Kafka"; return 1; }
  command -v java >/dev/null || { log "Java 17+ is needed to run Apache Kafka"; return 1; }
  log "fetching Apache Kafka $kafka_version jars from Maven Central into $kafka_lib (once per machine)"
  rm -rf "$kafka_lib"
  maven_resolve "$kafka_lib" "org.apache.kafka:kafka_2.13:$kafka_version" "org.apache.kafka:kafka-tools:$kafka_version" \
    "org.apache.logging.log4j:log4j-core:$log4j_version" "org.apache.logging.log4j:log4j-slf4j-impl:$log4j_version"
  touch "$kafka_lib/.complete"
}

# run_kafka_class HEAP CLASS ARGS...: a Kafka main class from the cached jars, logging
# warnings to stderr (the tools' own output stays on stdout).
run_kafka_class() {
  local heap=$1 class=$2
  shift 2
  java "-Xmx$heap" -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
    -Dlog4j2.configurationFile="$repo_root/infra/local/log4j2-tools.properties" \
    -cp "$kafka_lib/*" "$class" "$@"
}

# Fetches MirrorMaker 2's own jars (connect-mirror, connect-mirror-client) into $mirror_lib,
# once; everything else it needs (connect-runtime among it) is in $kafka_lib already.
ensure_mirror_jars() {
  [ -f "$mirror_lib/.complete" ] && return
  ensure_kafka_jars
  log "fetching MirrorMaker 2 $kafka_version jars from Maven Central into $mirror_lib (once per machine)"
  rm -rf "$mirror_lib"
  mkdir -p "$mirror_lib"
  local artifact
  for artifact in connect-mirror connect-mirror-client; do
    mvn -q -B -Dstyle.color=never dependency:copy -Dartifact="org.apache.kafka:$artifact:$kafka_version" \
      -DoutputDirectory="$mirror_lib" >&2
  done
  touch "$mirror_lib/.complete"
}

# Fetches the Connect sink's two plugins from Maven Central into $connect_plugins, once:
# Debezium's own plugin archive (the connector with its JDBC drivers and Hibernate), and
# the converter with its dependencies resolved by Maven.
ensure_connect_sink_plugins() {
  [ -f "$connect_plugins/.complete" ] && return
  ensure_kafka_jars
  log "fetching the Debezium JDBC sink $debezium_jdbc_version and Apicurio's converter $apicurio_converter_version into $connect_plugins (once per machine)"
  local work
  work=$(mktemp -d)
  rm -rf "$connect_plugins"
  mkdir -p "$connect_plugins/apicurio-converter"
  mvn -q -B -Dstyle.color=never dependency:copy \
    -Dartifact="io.debezium:debezium-connector-jdbc:$debezium_jdbc_version:tar.gz:plugin" -DoutputDirectory="$work" >&2
  tar -xzf "$work"/debezium-connector-jdbc-*.tar.gz -C "$connect_plugins"
  maven_resolve "$connect_plugins/apicurio-converter" "io.apicurio:apicurio-registry-utils-converter:$apicurio_converter_version"
  rm -rf "$work"
  [ -d "$connect_plugins/debezium-connector-jdbc" ] || { log "the Debezium archive has no debezium-connector-jdbc/"; return 1; }
  touch "$connect_plugins/.complete"
}

pg_ready_on() { "$pg_bin/pg_isready" -q -h 127.0.0.1 -p "$1"; }

# start_pg PGDATA PORT [-c setting=value ...]: starts the server of an initialised PGDATA
# on 127.0.0.1:PORT (its socket in PGDATA.sock), unless something answers there already.
start_pg() {
  local data=$1 port=$2 sock=$1.sock
  shift 2
  mkdir -p "$sock"
  if [ "$(id -u)" = 0 ]; then chown postgres: "$sock"; fi
  if pg_ready_on "$port"; then
    log "PostgreSQL already running on 127.0.0.1:$port"
    return
  fi
  log "starting PostgreSQL ($data) on 127.0.0.1:$port"
  as_pg "$pg_bin/pg_ctl" -D "$data" -w -t 60 -l "$data/server.log" \
    -o "-p $port -k $sock -c listen_addresses=127.0.0.1 -c max_connections=200 $*" start >&2
  wait_for 60 "PostgreSQL on port $port" pg_ready_on "$port"
}

# start_pg_replica PRIMARY_PORT PGDATA PORT [-c setting=value ...]: a streaming replica
# (hot standby, read-only) of the server on PRIMARY_PORT, made once with pg_basebackup
# (-R writes standby.signal and primary_conninfo) on a replication slot of its own, so the
# primary keeps the WAL the replica has not received yet; then started on PORT.
start_pg_replica() {
  local primary=$1 data=$2 port=$3 slot
  shift 3
  slot=orderflow_$(basename "$data" | tr -c 'a-z0-9_\n' '_')
  if [ ! -f "$data/PG_VERSION" ]; then
    log "making a streaming replica of 127.0.0.1:$primary in $data (pg_basebackup)"
    psql -h 127.0.0.1 -p "$primary" -U postgres -qtAc \
      "SELECT pg_drop_replication_slot('$slot') FROM pg_replication_slots WHERE slot_name = '$slot'" >/dev/null
    mkdir -p "$data"
    chmod 700 "$data"
    if [ "$(id -u)" = 0 ]; then chown postgres: "$data"; fi
    as_pg "$pg_bin/pg_basebackup" -h 127.0.0.1 -p "$primary" -U postgres -D "$data" -R -X stream -c fast \
      -C -S "$slot" >&2
  fi
  start_pg "$data" "$port" -c hot_standby=on "$@"
}
