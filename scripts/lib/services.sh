# Shared by scripts/test and scripts/demo: make sure this Debian machine has what Golconde's
# tests and demo need, and that PostgreSQL (127.0.0.1:5432), MariaDB (127.0.0.1:3306) and
# RabbitMQ (5672, STOMP on 61613) are running. Every step checks first, so running it again changes nothing.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $* (run as root, or install sudo)"; fi
}

apt_updated=
apt_install() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing ${missing[*]}"
    if [ -z "$apt_updated" ]; then as_root apt-get update -qq; apt_updated=1; fi
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() {
    local port=$1 what=$2 i
    for i in $(seq 1 120); do port_open "$port" && return 0; sleep 1; done
    die "$what is not listening on 127.0.0.1:$port after 120 s"
}

ensure_toolchain() {
    command -v cargo >/dev/null 2>&1 || die "cargo is not installed: install Rust (https://rustup.rs), then run this again"
    command -v cc >/dev/null 2>&1 || apt_install build-essential
    # jemalloc, the daemon's allocator, is built from source with make.
    command -v make >/dev/null 2>&1 || apt_install make
    command -v pkg-config >/dev/null 2>&1 || apt_install pkg-config
}

ensure_postgres() {
    command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql postgresql-client
    if ! port_open 5432; then
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        log "starting PostgreSQL $version"
        as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start
        wait_port 5432 PostgreSQL
    fi
    # The tests connect as user postgres over TCP without a password.
    if ! psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null 2>&1; then
        local hba
        hba=$(as_root su postgres -c "psql -Atc 'show hba_file'")
        log "allowing password-less local TCP connections in $hba"
        as_root sed -i '1i host all all 127.0.0.1/32 trust\nhost all all ::1/128 trust' "$hba"
        as_root su postgres -c "psql -Atc 'select pg_reload_conf()'" >/dev/null
        psql -h 127.0.0.1 -U postgres -d postgres -Atc 'select 1' >/dev/null \
            || die "cannot connect to PostgreSQL at 127.0.0.1:5432 as user postgres"
    fi
}

# MariaDB for the `mysql` plugin: the tests connect as root over TCP with no password.
ensure_mariadb() {
    command -v mariadb >/dev/null 2>&1 || apt_install mariadb-server mariadb-client
    if ! port_open 3306; then
        log "starting MariaDB"
        if command -v systemctl >/dev/null 2>&1 && systemctl is-system-running >/dev/null 2>&1; then
            as_root systemctl start mariadb
        else
            as_root mkdir -p /run/mysqld
            as_root chown mysql:mysql /run/mysqld
            as_root sh -c 'mysqld_safe --bind-address=127.0.0.1 >/dev/null 2>&1 &'
        fi
        wait_port 3306 MariaDB
    fi
    if ! mariadb -h 127.0.0.1 -u root -e 'select 1' >/dev/null 2>&1; then
        # Debian's root authenticates by unix socket; the tests use TCP and no password.
        log "letting MariaDB's root connect over local TCP without a password"
        as_root mariadb -e "ALTER USER 'root'@'localhost' IDENTIFIED VIA mysql_native_password USING PASSWORD('') OR unix_socket; FLUSH PRIVILEGES;"
        mariadb -h 127.0.0.1 -u root -e 'select 1' >/dev/null \
            || die "cannot connect to MariaDB at 127.0.0.1:3306 as root without a password"
    fi
}

ensure_rabbitmq() {
    command -v rabbitmq-server >/dev/null 2>&1 || apt_install rabbitmq-server
    if ! port_open 5672; then
        log "starting RabbitMQ"
        as_root rabbitmq-server -detached
        wait_port 5672 RabbitMQ
    fi
    if ! port_open 61613; then
        log "enabling RabbitMQ's STOMP plugin"
        as_root rabbitmq-plugins enable --quiet rabbitmq_stomp >/dev/null
        wait_port 61613 "RabbitMQ STOMP"
    fi
}

# NATS with JetStream for the `nats` plugin, on 127.0.0.1:4222. Debian's package does not
# turn JetStream on, so a server started here is given `-js` and a store of its own.
ensure_nats() {
    command -v nats-server >/dev/null 2>&1 || apt_install nats-server
    if ! port_open 4222; then
        log "starting NATS with JetStream"
        as_root mkdir -p /var/lib/nats-server
        as_root sh -c 'setsid nats-server -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
            -l /var/log/nats-server.log >/dev/null 2>&1 < /dev/null &'
        wait_port 4222 NATS
    fi
    # The server's greeting says whether JetStream is on.
    local info
    info=$(exec 3<>/dev/tcp/127.0.0.1/4222 && timeout 5 head -n 1 <&3) || true
    case "$info" in
        *'"jetstream":true'*) ;;
        INFO*) die "the NATS server on 127.0.0.1:4222 runs without JetStream: restart it with \`-js\` (or \`jetstream {}\` in its configuration)" ;;
        *) die "cannot read the greeting of the NATS server on 127.0.0.1:4222" ;;
    esac
}

# Redis for the `redis` plugin, on 127.0.0.1:6379.
ensure_redis() {
    command -v redis-server >/dev/null 2>&1 || apt_install redis-server redis-tools
    if ! port_open 6379; then
        log "starting Redis"
        as_root redis-server --bind 127.0.0.1 --port 6379 --daemonize yes >/dev/null
        wait_port 6379 Redis
    fi
    [ "$(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null)" = PONG ] \
        || die "the Redis server on 127.0.0.1:6379 does not answer PING without a password"
}

# ActiveMQ, the broker the first Golconde ran on, for the STOMP plugin's tests: Debian's
# package, started from a private folder with STOMP on 61614 (beside RabbitMQ's 61613) and
# STOMP over TLS on 61615, and stopped again by stop_activemq. Exports
# GOLCONDE_ACTIVEMQ_STOMP and GOLCONDE_ACTIVEMQ_STOMP_TLS for the tests.
activemq_dir=
start_activemq() {
    command -v java >/dev/null 2>&1 || apt_install default-jre-headless
    apt_install activemq
    if port_open 61614; then
        export GOLCONDE_ACTIVEMQ_STOMP=127.0.0.1:61614
        if port_open 61615; then
            export GOLCONDE_ACTIVEMQ_STOMP_TLS=127.0.0.1:61615
        fi
        return 0
    fi
    activemq_dir=$(mktemp -d)
    mkdir -p "$activemq_dir/data" "$activemq_dir/tmp"
    log "starting ActiveMQ (STOMP on 61614, over TLS on 61615)"
    ACTIVEMQ_CONF="$PWD/plugins/stomp/tests/activemq" ACTIVEMQ_BASE="$activemq_dir" \
        ACTIVEMQ_DATA="$activemq_dir/data" ACTIVEMQ_TMP="$activemq_dir/tmp" \
        ACTIVEMQ_USER="$(id -un)" ACTIVEMQ_PIDFILE="$activemq_dir/activemq.pid" \
        activemq start "xbean:file:$PWD/plugins/stomp/tests/activemq/activemq.xml" >"$activemq_dir/start.log" 2>&1 \
        || { cat "$activemq_dir/start.log" >&2; die "ActiveMQ did not start"; }
    wait_port 61614 "ActiveMQ STOMP"
    wait_port 61615 "ActiveMQ STOMP over TLS"
    export GOLCONDE_ACTIVEMQ_STOMP=127.0.0.1:61614
    export GOLCONDE_ACTIVEMQ_STOMP_TLS=127.0.0.1:61615
}

stop_activemq() {
    [ -n "$activemq_dir" ] || return 0
    [ -f "$activemq_dir/activemq.pid" ] && kill "$(cat "$activemq_dir/activemq.pid")" 2>/dev/null || true
    rm -rf "$activemq_dir"
    activemq_dir=
}

# Chromium, headless, for tests/dashboard.rs: it opens the stats dashboard in a real
# browser and checks what the page shows and that it logs no error.
ensure_chromium() {
    command -v chromium >/dev/null 2>&1 || apt_install chromium
}

ensure_services() {
    ensure_toolchain
    ensure_postgres
    ensure_mariadb
    ensure_rabbitmq
    ensure_nats
    ensure_redis
}

# cargo-fuzz, and the nightly toolchain it builds with (libFuzzer's instrumentation).
ensure_fuzz_toolchain() {
    ensure_toolchain
    if ! cargo +nightly --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 \
            || die "fuzzing needs a nightly Rust toolchain and rustup to install it (https://rustup.rs)"
        log "installing the nightly Rust toolchain for cargo-fuzz"
        rustup toolchain install nightly --profile minimal
    fi
    if ! cargo fuzz --version >/dev/null 2>&1; then
        log "installing cargo-fuzz"
        cargo install --locked cargo-fuzz
    fi
}
