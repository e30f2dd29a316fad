#!/usr/bin/env bash
# restguard benchmark (see bench/README.md).
#
# Builds the release server, starts it pinned to one core in a fresh temporary
# directory on a free 127.0.0.1 port, creates a user and a token with the CLI,
# and measures each row with oha pinned to another core: req/s, p50/p99, and
# the ratio to the no-auth `ping` row of the same run. Then the "login flood"
# row (Token GETs while password logins flood the server) and, optionally, the
# DRF reference's token row (../shared/peers/drf/bench.sh) with the same
# pinning. Prints a markdown table and writes it to bench/out/results-<date>.md.
#
# Knobs (environment): DURATION=10 WARMUP=2 CONNS=16 SERVER_CPU=0 LOADER_CPU=1
# ROWS="" (row names to keep; default all) PORT="" (default: a free port)
# FLOOD_CONNS=16 FLOOD_LEAD=3 OHA_THREADS=1 OHA_TIMEOUT=30 TRIES=3 REPEAT=1 NOISE_MAX=10
# QUIET_WAIT=20 LOCK_WAIT=1200 DRF=auto|1|0 DRF_CONFIG=sync DRF_PEER_SRC=../shared/peers
# DRF_PEER_DIR=/tmp/restguard-peers/drf BUILD=1 RESULTS=bench/out/results-<date>.md
# BENCH_PG_URL=postgres://postgres@127.0.0.1:5432/postgres BENCH_REDIS_URL=redis://127.0.0.1:6379/
# Only 127.0.0.1 is contacted; every wait loop and every oha run is bounded.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
cd "$REPO"

DURATION="${DURATION:-10}"
WARMUP="${WARMUP:-2}"
CONNS="${CONNS:-16}"
SERVER_CPU="${SERVER_CPU:-0}"
LOADER_CPU="${LOADER_CPU:-1}"
ROWS="${ROWS:-}"
PORT="${PORT:-}"
FLOOD_CONNS="${FLOOD_CONNS:-16}"
FLOOD_LEAD="${FLOOD_LEAD:-3}"
OHA_THREADS="${OHA_THREADS:-1}"
OHA_TIMEOUT="${OHA_TIMEOUT:-30}"
TRIES="${TRIES:-3}"
REPEAT="${REPEAT:-1}"
NOISE_MAX="${NOISE_MAX:-10}"
QUIET_WAIT="${QUIET_WAIT:-20}"
DRF="${DRF:-auto}"
DRF_CONFIG="${DRF_CONFIG:-sync}"
DRF_PEER_SRC="${DRF_PEER_SRC:-$REPO/../shared/peers}"
DRF_PEER_DIR="${DRF_PEER_DIR:-/tmp/restguard-peers/drf}"
BUILD="${BUILD:-1}"

OUT="$REPO/bench/out"
RAW="$OUT/raw"
RESULTS="${RESULTS:-$OUT/results-$(date -u +%F).md}"
TICK_HZ="$(getconf CLK_TCK)"
BENCH_USER="bench"
BENCH_PASS="bench-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')"

die() { echo "bench/run.sh: $*" >&2; exit 1; }
say() { echo "bench/run.sh: $*" >&2; }

case "$DURATION$WARMUP$CONNS$FLOOD_CONNS$FLOOD_LEAD$OHA_THREADS$OHA_TIMEOUT$TRIES$REPEAT$NOISE_MAX$QUIET_WAIT$SERVER_CPU$LOADER_CPU$PORT" in
    *[!0-9]*) die "DURATION, WARMUP, CONNS, FLOOD_CONNS, FLOOD_LEAD, OHA_THREADS, OHA_TIMEOUT, TRIES, REPEAT, NOISE_MAX, QUIET_WAIT, SERVER_CPU, LOADER_CPU, PORT are whole numbers" ;;
esac
[ "$DURATION" -ge 1 ] || die "DURATION must be at least 1"
[ "$TRIES" -ge 1 ] || die "TRIES must be at least 1"
[ "$REPEAT" -ge 1 ] || die "REPEAT must be at least 1"
[ "$OHA_THREADS" -ge 1 ] || die "OHA_THREADS must be at least 1"
for tool in taskset curl timeout python3 cargo; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
[ "$SERVER_CPU" = "$LOADER_CPU" ] && say "warning: SERVER_CPU = LOADER_CPU = $SERVER_CPU: server and loader share a core"

mkdir -p "$RAW"
# One benchmark at a time: two runs would share the two cores and bench/out/raw.
exec 9>"$OUT/.lock"
if ! flock -n 9; then
    say "another bench/run.sh is running (lock $OUT/.lock); waiting up to ${LOCK_WAIT:-1200} s"
    flock -w "${LOCK_WAIT:-1200}" 9 || die "still locked after ${LOCK_WAIT:-1200} s"
fi
rm -f "$RAW"/*.json "$RAW"/*.log "$RAW"/rows.tsv
ROWS_TSV="$RAW/rows.tsv"
: >"$ROWS_TSV"
START_UTC="$(date -u '+%Y-%m-%d %H:%M:%S UTC')"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg)"

# ------------------------------------------------------------------ tools ---
OHA="$(command -v oha 2>/dev/null || true)"
[ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ] && OHA="$HOME/.cargo/bin/oha"
if [ -z "$OHA" ]; then
    say "oha not found: installing it with 'cargo install oha --locked' (several minutes)"
    cargo install oha --locked
    OHA="$(command -v oha 2>/dev/null || echo "$HOME/.cargo/bin/oha")"
    [ -x "$OHA" ] || die "oha still not found after cargo install"
fi

TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target}"
BIN="$TARGET_DIR/release/restguard"
if [ "$BUILD" = 1 ]; then
    say "building: cargo build --release -p restguard-server"
    cargo build --release -p restguard-server
fi
[ -x "$BIN" ] || die "$BIN not found (build failed, or BUILD=0 without a previous build)"

# ----------------------------------------------------------------- server ---
SERVER_PID=""
FLOOD_PID=""
WORK=""

descendants() {  # PIDs of $1 and all its descendants
    local pid="$1" child
    echo "$pid"
    for child in $(pgrep -P "$pid" 2>/dev/null || true); do
        descendants "$child"
    done
}

tree_ticks() {  # utime+stime (clock ticks, all threads) summed over the process tree of $1
    local total=0 pid fields
    [ -n "$1" ] || { echo 0; return; }
    for pid in $(descendants "$1"); do
        fields="$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null)" || continue
        # after "pid (comm) ": field 1 is state, so utime/stime are the 12th/13th
        # shellcheck disable=SC2086
        set -- $fields
        total=$((total + ${12} + ${13}))
    done
    echo "$total"
}

server_ticks() { tree_ticks "$SERVER_PID"; }

hash_ticks() {  # utime+stime of the server's password-hashing threads (comm "restguard-hash-…")
    [ -n "$SERVER_PID" ] || { echo 0; return; }
    awk '{ sub(/^[0-9]+ \(/, ""); c = $0; sub(/\).*$/, "", c); if (c !~ /^restguard-hash/) next
           sub(/^.*\) /, ""); t += $12 + $13 } END { print t + 0 }' /proc/"$SERVER_PID"/task/*/stat 2>/dev/null || echo 0
}

stop_pid() {  # TERM to $1 and its descendants, up to 10 s, then KILL
    local pid="$1" tree
    [ -n "$pid" ] || return 0
    tree="$(descendants "$pid")"
    # shellcheck disable=SC2086
    kill -TERM $tree 2>/dev/null || true
    for _ in $(seq 1 40); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.25
    done
    # shellcheck disable=SC2086
    kill -KILL $tree 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

stop_server() { stop_pid "$SERVER_PID"; SERVER_PID=""; }

cleanup() {
    stop_pid "$FLOOD_PID"; FLOOD_PID=""
    stop_server
    [ -n "$WORK" ] && rm -rf "$WORK"
    WORK=""
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

if [ -z "$PORT" ]; then
    PORT="$(free_port)"
elif curl -sS -o /dev/null --max-time 2 "http://127.0.0.1:$PORT/" 2>/dev/null; then
    die "something already listens on 127.0.0.1:$PORT"
fi
BASE="http://127.0.0.1:$PORT"

WORK="$(mktemp -d "${TMPDIR:-/tmp}/restguard-bench.XXXXXX")"
say "starting: (cd $WORK && taskset -c $SERVER_CPU $BIN serve --bind 127.0.0.1:$PORT)"
(cd "$WORK" && exec taskset -c "$SERVER_CPU" "$BIN" serve --bind "127.0.0.1:$PORT") >"$RAW/server.log" 2>&1 &
SERVER_PID=$!

ready=0
for _ in $(seq 1 120); do  # up to 30 s
    kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during start-up (see $RAW/server.log)"
    if grep -q "restguard listening on" "$RAW/server.log" 2>/dev/null &&
        curl -fsS -o /dev/null --max-time 2 "$BASE/api/ping/" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 0.25
done
[ "$ready" = 1 ] || die "server not ready on $BASE after 30 s (see $RAW/server.log)"

cli() { (cd "$WORK" && timeout 60 "$BIN" "$@"); }
printf '%s\n' "$BENCH_PASS" | cli user create "$BENCH_USER" --password-stdin >/dev/null ||
    die "restguard user create failed"
TOKEN_KEY="$(cli token create "$BENCH_USER" --name bench)" || die "restguard token create failed"
[ -n "$TOKEN_KEY" ] || die "restguard token create printed no key"
LOGIN_FORM="username=$BENCH_USER&password=$BENCH_PASS"

# ------------------------------------------------------------------ noise ---
core_stat() {  # "total idle+iowait steal" jiffies of cpu$1
    awk -v c="cpu$1" '$1 == c { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $5 + $6, $9 }' /proc/stat
}

cpu_busy() {  # busy jiffies (not idle, iowait or steal) of the two cores
    awk -v a="cpu$SERVER_CPU" -v b="cpu$LOADER_CPU" '
        $1 == a || ($1 == b && a != b) { for (i = 2; i <= 9; i++) t += $i; t -= $5 + $6 + $9 }
        END { print t + 0 }' /proc/stat
}

children_ticks() {  # CPU ticks of this shell's waited-for children (the foreground oha runs)
    local fields
    fields="$(sed 's/^.*) //' "/proc/$$/stat")"
    # shellcheck disable=SC2086
    set -- $fields
    echo $((${14} + ${15}))
}

drain() {  # wait (max 60 s) until the server stops using CPU (queued hashes finish)
    local a b
    for _ in $(seq 1 120); do
        a="$(server_ticks)"; sleep 0.5; b="$(server_ticks)"
        # < 4 % of one core over the last half second counts as idle
        if [ $(((b - a) * 100)) -le $((TICK_HZ * 2)) ]; then return 0; fi
    done
    say "warning: server still busy after 60 s drain"
}

wait_quiet() {  # up to QUIET_WAIT s for a second in which others use <= NOISE_MAX % of a core
    local waited=0 b0 t0 b1 t1 other=0
    while [ "$waited" -lt "$QUIET_WAIT" ]; do
        b0="$(cpu_busy)"; t0="$(server_ticks)"; sleep 1; b1="$(cpu_busy)"; t1="$(server_ticks)"
        other=$(((b1 - b0 - (t1 - t0)) * 100 / TICK_HZ))
        [ "$other" -le "$NOISE_MAX" ] && return 0
        waited=$((waited + 1))
    done
    say "   machine still busy after ${QUIET_WAIT} s (${other}% of a core used by others); measuring anyway"
}

# ------------------------------------------------------------------- oha ---
# run_oha OUT_JSON LIMIT_S [oha args...]: oha on the loader core, JSON to OUT_JSON,
# killed after LIMIT_S seconds at the latest.
run_oha() {
    local out="$1" limit="$2"; shift 2
    taskset -c "$LOADER_CPU" timeout -k 5 "$limit" "$OHA" --no-tui --output-format json \
        -o "$out" --worker-threads "$OHA_THREADS" -t "${OHA_TIMEOUT}s" "$@" \
        >/dev/null 2>>"$RAW/oha.log" || true
}

# oha_stats JSON: prints "req/s<TAB>p50 ms<TAB>p99 ms<TAB>2xx count<TAB>errors"
# (req/s counts 2xx responses only; "aborted due to deadline" is not an error).
oha_stats() {
    python3 - "$1" <<'PY'
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception as e:  # missing or truncated output
    print("-\t-\t-\t0\tno oha output (%s)" % type(e).__name__)
    sys.exit(0)
codes = d.get("statusCodeDistribution") or {}
ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
errs = ["HTTP %s: %d" % (c, n) for c, n in sorted(codes.items()) if not str(c).startswith("2")]
errs += ["%s: %d" % (k, n) for k, n in sorted((d.get("errorDistribution") or {}).items())
         if k != "aborted due to deadline"]
total = d["summary"].get("total") or 0
rps = ok / total if total > 0 else 0.0
lat = d.get("latencyPercentiles") or {}
ms = lambda v: "-" if v is None else ("%.2f" % (v * 1e3) if v < 0.01 else "%.1f" % (v * 1e3) if v < 1 else "%.0f" % (v * 1e3))
print("%s\t%s\t%s\t%d\t%s" % ("%.1f" % rps if rps < 100 else "%.0f" % rps, ms(lat.get("p50")), ms(lat.get("p99")), ok, "; ".join(errs) or "0"))
PY
}

# --------------------------------------------------------------- measure ---
# One measured run ($1 = output JSON, rest: oha args). Sets, in % of one core:
# T_SRV (server process, all threads), T_LDR (the measured oha), T_FLOOD (the
# flood oha, if any), T_OSRV / T_OLDR (anything else on the server's / loader's
# core), T_NOISE (the larger of those two), T_STEAL (% of both cores).
measure_once() {
    local out="$1"; shift
    local s0 l0 t0 c0 f0 w0 s1 l1 t1 c1 f1 w1 h0 h1
    s0="$(core_stat "$SERVER_CPU")"; l0="$(core_stat "$LOADER_CPU")"; h0="$(hash_ticks)"
    t0="$(server_ticks)"; c0="$(children_ticks)"; f0="$(tree_ticks "$FLOOD_PID")"; w0="$(date +%s%N)"
    "$LOAD" "$out" $((DURATION + OHA_TIMEOUT + 30)) -z "${DURATION}s" "$@"
    w1="$(date +%s%N)"; c1="$(children_ticks)"; f1="$(tree_ticks "$FLOOD_PID")"; t1="$(server_ticks)"
    s1="$(core_stat "$SERVER_CPU")"; l1="$(core_stat "$LOADER_CPU")"; h1="$(hash_ticks)"
    T_HASH="$(awk -v h=$((h1 - h0)) -v ns=$((w1 - w0)) -v hz="$TICK_HZ" 'BEGIN { printf "%.0f", 100 * h / hz / (ns / 1e9) }')"
    read -r T_SRV T_LDR T_FLOOD T_OSRV T_OLDR T_STEAL T_NOISE < <(awk -v s0="$s0" -v s1="$s1" \
        -v l0="$l0" -v l1="$l1" -v srv=$((t1 - t0)) -v ldr=$((c1 - c0)) -v fl=$((f1 - f0)) \
        -v ns=$((w1 - w0)) -v hz="$TICK_HZ" \
        -v same="$([ "$SERVER_CPU" = "$LOADER_CPU" ] && echo 1 || echo 0)" '
        BEGIN {
            split(s0, a); split(s1, b); split(l0, c); split(l1, d)
            sec = ns / 1e9
            p_srv = 100 * srv / hz / sec; p_ldr = 100 * ldr / hz / sec; p_fl = 100 * fl / hz / sec
            busy0 = 100 * ((b[1] - a[1]) - (b[2] - a[2]) - (b[3] - a[3])) / hz / sec
            busy1 = 100 * ((d[1] - c[1]) - (d[2] - c[2]) - (d[3] - c[3])) / hz / sec
            if (same) { o0 = busy0 - p_srv - p_ldr - p_fl; o1 = o0 }
            else { o0 = busy0 - p_srv; o1 = busy1 - p_ldr - p_fl }
            if (o0 < 0) o0 = 0; if (o1 < 0) o1 = 0
            total = (b[1] - a[1]) + (same ? 0 : d[1] - c[1])
            steal = (b[3] - a[3]) + (same ? 0 : d[3] - c[3])
            noise = (o0 > o1 ? o0 : o1)
            printf "%.0f %.0f %.0f %.0f %.0f %.0f %.0f\n", p_srv, p_ldr, p_fl, o0, o1,
                (total > 0 ? 100 * steal / total : 0), noise
        }')
}

# The measured load: run_oha, or run_chain for the single-use refresh row.
LOAD=run_oha

# Background load for the next row(s): oha arguments (incl. URL) of a flood run
# beside the measured one, on the loader core. Empty: no flood.
FLOOD_ARGS=()
FLOOD_JSON=""

start_flood() {  # $1 = output JSON
    FLOOD_JSON="$1"
    local secs=$((FLOOD_LEAD + DURATION + 2))
    run_oha "$FLOOD_JSON" $((secs + OHA_TIMEOUT + 30)) -z "${secs}s" -c "$FLOOD_CONNS" "${FLOOD_ARGS[@]}" &
    FLOOD_PID=$!
    sleep "$FLOOD_LEAD"  # let the hash queue fill before measuring
}

finish_flood() {  # wait for the flood's own deadline (bounded by run_oha's timeout)
    [ -n "$FLOOD_PID" ] || return 0
    wait "$FLOOD_PID" 2>/dev/null || true
    FLOOD_PID=""
}

# measure_kept NAME [load args...]: the measured runs of one row. Each repetition (REPEAT)
# runs up to TRIES times until a run is not disturbed (> NOISE_MAX % of a core used by
# others) and keeps the least disturbed; of the REPEAT kept runs, the one with the median
# req/s is reported (run-to-run spread on a VM is larger than the gaps between rows).
# BEFORE_TRY (a command) runs before each run; FLOODED=1 runs the flood beside it.
# Sets K_FILE (path without .json), K_TRIES and the K_* CPU columns.
BEFORE_TRY=:
measure_kept() {
    local name="$1"; shift
    local rep try kept k_noise base reps=()
    for rep in $(seq 1 "$REPEAT"); do
        base="$RAW/$name"
        [ "$REPEAT" -gt 1 ] && base="$RAW/$name.rep$rep"
        kept=0 k_noise=-1
        for try in $(seq 1 "$TRIES"); do
            $BEFORE_TRY || die "$name: $BEFORE_TRY failed"
            wait_quiet
            [ "${FLOODED:-0}" = 1 ] && start_flood "$base.try$try.flood.json"
            measure_once "$base.try$try.json" "$@"
            finish_flood
            drain
            if [ "$k_noise" -lt 0 ] || [ "$T_NOISE" -lt "$k_noise" ]; then
                kept="$try" k_noise="$T_NOISE"
                printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$T_SRV" "$T_LDR" "$T_FLOOD" "$T_OSRV" \
                    "$T_OLDR" "$T_STEAL" "$T_NOISE" "$T_HASH" >"$base.cpu"
            fi
            [ "$T_NOISE" -le "$NOISE_MAX" ] && break
            say "   try $try disturbed: other processes used ${T_NOISE}% of a benchmark core (> ${NOISE_MAX}%)"
        done
        local tries_col="$try"
        [ "$kept" = "$try" ] || tries_col="$try (kept $kept)"
        cp "$base.try$kept.json" "$base.kept.json"
        [ -f "$base.try$kept.flood.json" ] && cp "$base.try$kept.flood.json" "$base.kept.flood.json"
        reps+=("$(oha_stats "$base.kept.json" | cut -f1)"$'\t'"$base.kept"$'\t'"$tries_col")
        [ "$REPEAT" -gt 1 ] && say "   repetition $rep: $(printf '%s' "${reps[-1]}" | cut -f1) req/s"
    done
    local chosen
    chosen="$(printf '%s\n' "${reps[@]}" | sort -t $'\t' -k1,1g | sed -n "$(( (REPEAT + 1) / 2 ))p")"
    K_FILE="$(printf '%s' "$chosen" | cut -f2)"
    K_TRIES="$(printf '%s' "$chosen" | cut -f3)"
    [ "$REPEAT" -gt 1 ] && K_TRIES="$K_TRIES; median of $REPEAT"
    read -r K_SRV K_LDR K_FL K_OSRV K_OLDR K_STEAL K_NOISE K_HASH <"${K_FILE%.kept}.cpu"
}

# row NAME AUTH METHOD PATH [oha args...]
# Measures one row (if NAME is in ROWS, or ROWS is empty): a single checked
# request (must be 2xx), WARMUP s unmeasured, then DURATION s measured at CONNS
# connections; a run disturbed by other processes (> NOISE_MAX % of a core) is
# repeated, up to TRIES runs, and the least disturbed kept. With FLOOD_ARGS set,
# each measured run has the flood running beside it. Appends to rows.tsv.
row() {
    local name="$1" auth="$2" method="$3" path="$4"
    shift 4
    if [ -n "$ROWS" ] && [[ " $ROWS " != *" $name "* ]]; then return 0; fi
    local url="$BASE$path"
    local args=(-m "$method" "$@" "$url")
    local flooded=0
    [ "${#FLOOD_ARGS[@]}" -gt 0 ] && flooded=1

    say "== $name: $method $path ($auth)"
    run_oha "$RAW/$name.check.json" $((OHA_TIMEOUT + 30)) -n 1 -c 1 "${args[@]}"
    local check
    check="$(python3 -c 'import json, sys
d = json.load(open(sys.argv[1])); c = d.get("statusCodeDistribution") or {}
print(",".join(sorted(c)) or ";".join(d.get("errorDistribution") or {}) or "none")' \
        "$RAW/$name.check.json" 2>/dev/null || echo "no output")"
    if [[ "$check" != 2?? ]]; then
        printf '%s\t%s %s\t%s\t-\t-\t-\t0\tFAILED: check request got %s\t-\t-\t-\t-\t-\t-\t0\t\t-\n' \
            "$name" "$method" "$path" "$auth" "$check" >>"$ROWS_TSV"
        say "   check request failed: $check"
        return 0
    fi

    if [ "$WARMUP" -gt 0 ]; then
        run_oha "$RAW/$name.warmup.json" $((WARMUP + OHA_TIMEOUT + 30)) -z "${WARMUP}s" -c "$CONNS" "${args[@]}"
        drain
    fi

    FLOODED="$flooded" measure_kept "$name" -c "$CONNS" "${args[@]}"
    local kept="$K_FILE" tries_col="$K_TRIES" k_srv="$K_SRV" k_ldr="$K_LDR" k_fl="$K_FL"
    local k_osrv="$K_OSRV" k_oldr="$K_OLDR" k_steal="$K_STEAL" k_noise="$K_NOISE" k_hash="$K_HASH"

    local stats flood=""
    stats="$(oha_stats "$kept.json")"
    if [ "$flooded" = 1 ]; then
        # flood column: logins/s (2xx), p50 ms, errors, flood oha CPU %
        flood="$(oha_stats "$kept.flood.json" |
            awk -F'\t' -v cpu="$k_fl" '{ printf "%s req/s, p50 %s ms, errors: %s, flood oha CPU %s%%", $1, $2, $5, cpu }')"
    fi
    # name, endpoint, auth, req/s, p50, p99, ok, errors, srv%, ldr%, osrv%, oldr%, steal%, tries, noise, flood, hash%
    printf '%s\t%s %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" "$method" "$path" "$auth" "$stats" "$k_srv" "$k_ldr" "$k_osrv" "$k_oldr" \
        "$k_steal" "$tries_col" "$k_noise" "$flood" "$k_hash" >>"$ROWS_TSV"
    awk -F'\t' '{ printf "   %s req/s, p50 %s ms, p99 %s ms, errors %s; server CPU %s%% (hash threads %s%%), oha CPU %s%%, others %s%%/%s%%\n", $4, $5, $6, $8, $9, $17, $10, $11, $12 }' \
        <(tail -n1 "$ROWS_TSV") >&2
}

# --------------------------------------------------------- chained rows ---
# Single-use refresh (rotation + blacklist, the default): each request needs the token the
# previous one returned, which oha cannot do; wrk with bench/refresh_chain.lua runs one chain
# per connection (CONNS threads, one connection each) from fresh logins.
WRK="$(command -v wrk 2>/dev/null || true)"
CHAIN_TOKENS="$RAW/chain-tokens.txt"

fresh_chains() {  # CONNS password logins → one refresh token per line in $CHAIN_TOKENS
    local i
    : >"$CHAIN_TOKENS"
    for i in $(seq 1 "$CONNS"); do
        curl -fsS --max-time 30 -H "Content-Type: application/x-www-form-urlencoded" \
            -d "$LOGIN_FORM" "$BASE/api/token/" |
            python3 -c 'import json, sys; print(json.load(sys.stdin)["refresh"])' >>"$CHAIN_TOKENS" ||
            return 1
    done
}

run_chain() {  # like run_oha: OUT LIMIT -z Ns ... URL (only the duration and URL are used)
    local out="$1" limit="$2" duration="${4%s}" url="${!#}"
    taskset -c "$LOADER_CPU" timeout -k 5 "$limit" "$WRK" -t "$CONNS" -c "$CONNS" \
        -d "${duration}s" --timeout "${OHA_TIMEOUT}s" -s "$REPO/bench/refresh_chain.lua" \
        "$url" -- "$CHAIN_TOKENS" "$out" >>"$RAW/wrk.log" 2>&1 || true
}

row_chain() {  # row_chain NAME AUTH PATH: POST PATH with chained refresh tokens (wrk)
    local name="$1" auth="$2" path="$3"
    if [ -n "$ROWS" ] && [[ " $ROWS " != *" $name "* ]]; then return 0; fi
    if [ -z "$WRK" ]; then
        printf '%s\tPOST %s\t%s\t-\t-\t-\t0\tSKIPPED: wrk not installed (apt-get install wrk)\t-\t-\t-\t-\t-\t-\t0\t\t-\n' \
            "$name" "$path" "$auth" >>"$ROWS_TSV"
        say "   $name skipped: wrk not installed (apt-get install wrk)"
        return 0
    fi
    say "== $name: POST $path ($auth)"
    LOAD=run_chain
    if [ "$WARMUP" -gt 0 ]; then
        fresh_chains || die "$name: password logins for the refresh chains failed"
        DURATION="$WARMUP" measure_once "$RAW/$name.warmup.json" "$BASE$path"
        drain
    fi
    # Logins (argon2id) before each run's quiet wait, outside the measured window.
    BEFORE_TRY=fresh_chains measure_kept "$name" "$BASE$path"
    LOAD=run_oha
    local tries_col="$K_TRIES" k_srv="$K_SRV" k_ldr="$K_LDR" k_osrv="$K_OSRV" k_oldr="$K_OLDR"
    local k_steal="$K_STEAL" k_noise="$K_NOISE" k_hash="$K_HASH" stats
    stats="$(oha_stats "$K_FILE.json")"
    printf '%s\t%s %s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$name" POST "$path" "$auth" "$stats" "$k_srv" "$k_ldr" "$k_osrv" "$k_oldr" \
        "$k_steal" "$tries_col" "$k_noise" "" "$k_hash" >>"$ROWS_TSV"
    awk -F'\t' '{ printf "   %s req/s, p50 %s ms, p99 %s ms, errors %s; server CPU %s%%, wrk CPU %s%%\n", $4, $5, $6, $8, $9, $10 }' \
        <(tail -n1 "$ROWS_TSV") >&2
}

# ------------------------------------------------------------------- rows ---
# Add rows here: row NAME AUTH METHOD PATH [oha args...]. Credentials available:
# $BENCH_USER / $BENCH_PASS (password), $TOKEN_KEY (Token key), $LOGIN_FORM.
FORM=(-T application/x-www-form-urlencoded)

row ping "none (AllowAny, default authenticators)" GET /api/ping/
row token-me "Token key (digest lookup)" GET /api/me/ -H "Authorization: Token $TOKEN_KEY"
row basic-me "Basic (argon2id per request)" GET /api/me/ -a "$BENCH_USER:$BENCH_PASS"
row token-obtain "password login (argon2id), new token" POST /api-token-auth/ "${FORM[@]}" -d "$LOGIN_FORM"

# Login flood: the same Token GETs while a second oha, on the same loader core,
# floods POST /api-token-auth/ with valid logins (FLOOD_CONNS connections).
FLOOD_ARGS=(-m POST "${FORM[@]}" -d "$LOGIN_FORM" "$BASE/api-token-auth/")
row token-me-flood "Token key, during a login flood" GET /api/me/ -H "Authorization: Token $TOKEN_KEY"
FLOOD_ARGS=()

# ---------------------------------------------------------- session row ---
# (docs/session.md) A session cookie from the SPA login: CSRF cookie + token from
# GET /api/csrf/, then POST /api/session/login/. Cookies are read from the
# Set-Cookie headers (they are Secure by default, which curl's jar refuses over HTTP).
session_login() {  # sets SESSION_ID
    local headers secret token
    headers="$(curl -fsS -D - -o "$WORK/csrf.json" "$BASE/api/csrf/")" || die "GET /api/csrf/ failed"
    secret="$(printf '%s' "$headers" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: csrftoken=\([^;]*\).*/\1/p')"
    token="$(python3 -c 'import json, sys; print(json.load(open(sys.argv[1]))["csrfToken"])' "$WORK/csrf.json")"
    headers="$(curl -fsS -D - -o /dev/null -H "Cookie: csrftoken=$secret" -H "X-CSRFToken: $token" \
        -d "$LOGIN_FORM" "$BASE/api/session/login/")" || die "POST /api/session/login/ failed"
    SESSION_ID="$(printf '%s' "$headers" | tr -d '\r' | sed -n 's/^[Ss]et-[Cc]ookie: sessionid=\([^;]*\).*/\1/p')"
    [ -n "$SESSION_ID" ] || die "session login set no sessionid cookie"
}
if [ -z "$ROWS" ] || [[ " $ROWS " == *" session-me "* ]]; then
    session_login
    row session-me "session cookie (cached session lookup)" GET /api/me/ -H "Cookie: sessionid=$SESSION_ID"
fi

# -------------------------------------------------------------- JWT rows ---
# (docs/jwt.md) The server restarts on the same port and database with JWT
# settings: access tokens valid for the whole run, and for the refresh row
# blacklist_after_rotation=false, so that oha can replay one refresh token (with
# the defaults a refresh token works exactly once). Each refresh call still
# verifies the token, checks the user, signs two tokens and INSERTs a refresh
# record: a write per call. Then EdDSA keys for the EdDSA row.
restart_server() {  # restart_server VAR=value...: same port, same database
    stop_server
    say "restarting: (cd $WORK && env $* taskset -c $SERVER_CPU $BIN serve --bind 127.0.0.1:$PORT)"
    (cd "$WORK" && exec env "$@" taskset -c "$SERVER_CPU" "$BIN" serve --bind "127.0.0.1:$PORT") \
        >>"$RAW/server.log" 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 1 120); do  # up to 30 s
        kill -0 "$SERVER_PID" 2>/dev/null || die "server exited during restart (see $RAW/server.log)"
        curl -fsS -o /dev/null --max-time 2 "$BASE/api/ping/" 2>/dev/null && return 0
        sleep 0.25
    done
    die "server not ready on $BASE after 30 s (see $RAW/server.log)"
}

jwt_obtain() {  # sets JWT_ACCESS and JWT_REFRESH from POST /api/token/ (password login)
    local pair
    pair="$(curl -fsS --max-time 30 -H "Content-Type: application/x-www-form-urlencoded" \
        -d "$LOGIN_FORM" "$BASE/api/token/")" || die "POST /api/token/ failed"
    JWT_ACCESS="$(printf '%s' "$pair" | python3 -c 'import json, sys; print(json.load(sys.stdin)["access"])')"
    JWT_REFRESH="$(printf '%s' "$pair" | python3 -c 'import json, sys; print(json.load(sys.stdin)["refresh"])')"
    [ -n "$JWT_ACCESS" ] && [ -n "$JWT_REFRESH" ] || die "POST /api/token/ returned no tokens"
}

if [ -z "$ROWS" ] || [[ " $ROWS " == *" jwt-me "* ]] || [[ " $ROWS " == *" jwt-refresh "* ]]; then
    restart_server RESTGUARD_JWT__ACCESS_TOKEN_LIFETIME=1d RESTGUARD_JWT__BLACKLIST_AFTER_ROTATION=false
    jwt_obtain
    row jwt-me "JWT HS256 access token (signature + cached user)" GET /api/me/ -H "Authorization: Bearer $JWT_ACCESS"
    row jwt-refresh "JWT HS256 refresh (rotation: 2 signatures + 1 INSERT)" POST /api/token/refresh/ "${FORM[@]}" -d "refresh=$JWT_REFRESH"
fi
if [ -z "$ROWS" ] || [[ " $ROWS " == *" jwt-refresh-chain "* ]]; then
    restart_server RESTGUARD_JWT__ACCESS_TOKEN_LIFETIME=1d
    row_chain jwt-refresh-chain "JWT HS256 single-use refresh, chained (default: 1 UPDATE + 1 INSERT)" /api/token/refresh/
fi
if [ -z "$ROWS" ] || [[ " $ROWS " == *" jwt-eddsa-me "* ]]; then
    restart_server RESTGUARD_JWT__ACCESS_TOKEN_LIFETIME=1d RESTGUARD_JWT__ALGORITHM=EdDSA
    jwt_obtain
    row jwt-eddsa-me "JWT EdDSA access token (signature + cached user)" GET /api/me/ -H "Authorization: Bearer $JWT_ACCESS"
fi

# ------------------------------------------------------------ OAuth2 rows ---
# (docs/oauth2.md) A user-bound access token from the password grant (switched on for the
# bench only), and the client-credentials grant (one INSERT per call).
if [ -z "$ROWS" ] || [[ " $ROWS " == *" oauth-me "* ]] || [[ " $ROWS " == *" oauth-cc "* ]]; then
    restart_server RESTGUARD_OAUTH2__PASSWORD_GRANT=true
    OAUTH_APP="$(cli app create --name bench --client-type confidential --grant client-credentials --grant password)" ||
        die "restguard app create failed"
    OAUTH_ID="$(printf '%s' "$OAUTH_APP" | python3 -c 'import json, sys; print(json.load(sys.stdin)["client_id"])')"
    OAUTH_SECRET="$(printf '%s' "$OAUTH_APP" | python3 -c 'import json, sys; print(json.load(sys.stdin)["client_secret"])')"
    OAUTH_ACCESS="$(curl -fsS --max-time 30 -u "$OAUTH_ID:$OAUTH_SECRET" -d grant_type=password \
        --data-urlencode "username=$BENCH_USER" --data-urlencode "password=$BENCH_PASS" "$BASE/o/token/" |
        python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])')" || die "OAuth2 password grant failed"
    row oauth-me "OAuth2 bearer access token (digest lookup, 1 s cache)" GET /api/me/ -H "Authorization: Bearer $OAUTH_ACCESS"
    row oauth-cc "OAuth2 client_credentials (client secret digest + 1 INSERT)" POST /o/token/ "${FORM[@]}" -a "$OAUTH_ID:$OAUTH_SECRET" -d "grant_type=client_credentials"
fi

# ------------------------------------------------------- scale-out rows ---
# (docs/scale-out.md) Throttled routes (every request counted: in process, then in
# Redis with one Lua call per request) and Token on PostgreSQL with and without the
# 1 s token cache. PostgreSQL rows run in a scratch schema of BENCH_PG_URL (default the
# local server), dropped afterwards; they and the Redis row are skipped with a note when
# the service does not answer. The rate is high enough never to refuse.
BENCH_PG_URL="${BENCH_PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}"
BENCH_REDIS_URL="${BENCH_REDIS_URL:-redis://127.0.0.1:6379/}"
THROTTLE_ENV=(RESTGUARD_THROTTLE__USER=100000000/d)
if [ -z "$ROWS" ] || [[ " $ROWS " == *" throttled-me "* ]]; then
    restart_server "${THROTTLE_ENV[@]}"
    row throttled-me "Token key + user throttle (in process)" GET /api/me/ -H "Authorization: Token $TOKEN_KEY"
fi
if [ -z "$ROWS" ] || [[ " $ROWS " == *" redis-throttled-me "* ]]; then
    if command -v redis-cli >/dev/null && timeout 5 redis-cli -u "$BENCH_REDIS_URL" ping >/dev/null 2>&1; then
        restart_server "${THROTTLE_ENV[@]}" RESTGUARD_REDIS__URL="$BENCH_REDIS_URL" \
            RESTGUARD_REDIS__KEY_PREFIX="restguard-bench-$$:"
        row redis-throttled-me "Token key + user throttle in Redis (1 Lua call per request)" GET /api/me/ -H "Authorization: Token $TOKEN_KEY"
    else
        say "skipping redis-throttled-me: no Redis answers at $BENCH_REDIS_URL"
    fi
fi
if [ -z "$ROWS" ] || [[ " $ROWS " == *" redis-session-me "* ]]; then
    if command -v redis-cli >/dev/null && timeout 5 redis-cli -u "$BENCH_REDIS_URL" ping >/dev/null 2>&1; then
        restart_server RESTGUARD_REDIS__URL="$BENCH_REDIS_URL" RESTGUARD_REDIS__SESSIONS=true \
            RESTGUARD_REDIS__KEY_PREFIX="restguard-bench-$$:"
        session_login
        row redis-session-me "session cookie, sessions in Redis (cached lookup)" GET /api/me/ -H "Cookie: sessionid=$SESSION_ID"
    else
        say "skipping redis-session-me: no Redis answers at $BENCH_REDIS_URL"
    fi
fi
PG_SCHEMA=""
drop_pg_schema() {
    [ -n "$PG_SCHEMA" ] && timeout 30 psql -q "$BENCH_PG_URL" -c "DROP SCHEMA IF EXISTS $PG_SCHEMA CASCADE" >/dev/null 2>&1
    PG_SCHEMA=""
}
if [ -z "$ROWS" ] || [[ " $ROWS " == *" pg-token-me "* ]] || [[ " $ROWS " == *" pg-token-me-nocache "* ]]; then
    if command -v psql >/dev/null && timeout 10 psql -q "$BENCH_PG_URL" -c "SELECT 1" >/dev/null 2>&1; then
        PG_SCHEMA="restguard_bench_$$"
        trap 'drop_pg_schema; cleanup' EXIT
        timeout 30 psql -q "$BENCH_PG_URL" -c "CREATE SCHEMA $PG_SCHEMA" >/dev/null || die "cannot create schema $PG_SCHEMA"
        case "$BENCH_PG_URL" in *\?*) sep='&' ;; *) sep='?' ;; esac
        PG_URL="$BENCH_PG_URL${sep}options=-c%20search_path%3D$PG_SCHEMA"
        pg_cli() { (cd "$WORK" && RESTGUARD_DATABASE__URL="$PG_URL" timeout 60 "$BIN" "$@"); }
        pg_cli migrate 2>/dev/null || die "restguard migrate on PostgreSQL failed"
        printf '%s\n' "$BENCH_PASS" | pg_cli user create "$BENCH_USER" --password-stdin >/dev/null 2>&1 ||
            die "restguard user create on PostgreSQL failed"
        PG_TOKEN="$(pg_cli token create "$BENCH_USER" --name bench)" || die "token create on PostgreSQL failed"
        restart_server RESTGUARD_DATABASE__URL="$PG_URL"
        row pg-token-me "Token key on PostgreSQL (1 s token cache)" GET /api/me/ -H "Authorization: Token $PG_TOKEN"
        restart_server RESTGUARD_DATABASE__URL="$PG_URL" RESTGUARD_TOKEN__CACHE_TTL=0
        row pg-token-me-nocache "Token key on PostgreSQL, no cache (1 indexed query per request)" GET /api/me/ -H "Authorization: Token $PG_TOKEN"
        stop_server
        drop_pg_schema
    else
        say "skipping pg-token-me rows: no PostgreSQL answers at $BENCH_PG_URL (or psql missing)"
    fi
fi

stop_server

# -------------------------------------------------------------------- DRF ---
DRF_RESULTS="$OUT/drf-results-$(date -u +%F).md"
DRF_NOTE=""
drf_enabled=0
case "$DRF" in
    1) drf_enabled=1 ;;
    0) ;;
    auto) { [ -x "$DRF_PEER_DIR/.venv/bin/python" ] || [ -f "$DRF_PEER_SRC/drf/bench.sh" ]; } && drf_enabled=1 ;;
    *) die "DRF must be auto, 1 or 0" ;;
esac
if [ -n "$ROWS" ] && [[ " $ROWS " != *" token-me "* ]] && [ "$DRF" != 1 ]; then drf_enabled=0; fi

if [ "$drf_enabled" = 1 ]; then
    if [ ! -x "$DRF_PEER_DIR/.venv/bin/python" ]; then
        [ -f "$DRF_PEER_SRC/drf/bench.sh" ] || die "DRF=1 but no peer at $DRF_PEER_SRC/drf and no set-up copy at $DRF_PEER_DIR"
        peers="$(dirname "$DRF_PEER_DIR")"
        say "copying $DRF_PEER_SRC (drf, axum-baseline) to $peers and running ./setup.sh there"
        mkdir -p "$peers"
        cp -r "$DRF_PEER_SRC/drf/." "$DRF_PEER_DIR/"
        [ -d "$DRF_PEER_SRC/axum-baseline" ] && mkdir -p "$peers/axum-baseline" &&
            cp -r "$DRF_PEER_SRC/axum-baseline/." "$peers/axum-baseline/"
        chmod -R u+w "$peers"
        (cd "$DRF_PEER_DIR" && ./setup.sh) >"$RAW/drf-setup.log" 2>&1 ||
            die "DRF peer setup failed (see $RAW/drf-setup.log)"
    fi
    say "DRF reference: ROWS=\"ping token-me\" CONFIGS=\"$DRF_CONFIG\" ./bench.sh in $DRF_PEER_DIR"
    if (cd "$DRF_PEER_DIR" && ROWS="ping token-me" CONFIGS="$DRF_CONFIG" DURATION="$DURATION" \
        WARMUP="$WARMUP" CONNS="$CONNS" SERVER_CPU="$SERVER_CPU" LOADER_CPU="$LOADER_CPU" \
        TRIES="$TRIES" NOISE_MAX="$NOISE_MAX" QUIET_WAIT="$QUIET_WAIT" RESULTS="$DRF_RESULTS" \
        timeout 900 ./bench.sh) >"$RAW/drf-bench.log" 2>&1; then
        :
    else
        DRF_NOTE="DRF bench.sh failed (see $RAW/drf-bench.log)"
        say "$DRF_NOTE"
    fi
fi

drf_rps() {  # $1 = endpoint path in the DRF table; prints its req/s or nothing
    [ -f "$DRF_RESULTS" ] || return 0
    awk -F'|' -v cfg="$DRF_CONFIG" -v ep="$1" '
        { c = $2; e = $3; gsub(/^ +| +$/, "", c); gsub(/^ +| +$/, "", e) }
        c == cfg && e == "`GET " ep "`" { r = $5; gsub(/ /, "", r); print r; exit }' "$DRF_RESULTS"
}

# ----------------------------------------------------------------- report ---
git_rev="$(git rev-parse --short HEAD 2>/dev/null || echo "?")"
git diff --quiet HEAD -- 2>/dev/null || git_rev="$git_rev (+ uncommitted changes)"

{
    echo "# restguard benchmark — $(date -u +%F)"
    echo
    echo "Run $START_UTC → $(date -u '+%H:%M:%S UTC'); load average at start $LOAD_START, at end $(cut -d' ' -f1-3 /proc/loadavg)."
    echo
    echo "- Command: \`DURATION=$DURATION WARMUP=$WARMUP CONNS=$CONNS SERVER_CPU=$SERVER_CPU LOADER_CPU=$LOADER_CPU FLOOD_CONNS=$FLOOD_CONNS OHA_THREADS=$OHA_THREADS TRIES=$TRIES REPEAT=$REPEAT NOISE_MAX=$NOISE_MAX DRF=$DRF${ROWS:+ ROWS=\"$ROWS\"} bench/run.sh\` (port $PORT)."
    echo "- Machine: $(nproc) CPUs ($(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)), Linux $(uname -r)."
    echo "- restguard $git_rev, release build ($(rustc --version | awk '{print $1, $2}')); fresh SQLite DB in a temporary directory; one user, one token, created with the CLI."
    echo "- Pinning: server under \`taskset -c $SERVER_CPU\` (tokio sizes its runtime from the affinity mask: 1 worker; password hashing on the server's nice +10 hash thread(s), same core); oha under \`taskset -c $LOADER_CPU\`."
    echo "- Loader: $("$OHA" --version | head -n1), \`--no-tui -c $CONNS -z ${DURATION}s --worker-threads $OHA_THREADS -t ${OHA_TIMEOUT}s\`, ${WARMUP}s unmeasured warm-up per row, server drained (idle) before each measured run; only 127.0.0.1."
    echo "- Login flood: a second oha on the same loader core (core $LOADER_CPU), \`-c $FLOOD_CONNS\` valid \`POST /api-token-auth/\` logins, started ${FLOOD_LEAD}s before the measured Token run and running through it."
    echo
    echo "req/s counts 2xx responses over the measured duration; p50/p99 in ms (closed loop: they include queueing behind the $CONNS connections). × ping = req/s ÷ the ping row's req/s. req/s per srv core = req/s ÷ (srv CPU% / 100), what the server does per core-second it actually used; × ping per core compares that with ping's (it differs from × ping when a row did not saturate the server core, e.g. because the loader core was the limit). srv CPU% / oha CPU% = CPU of the server process (all threads) / of the measured oha over the run (100 = one core); hash CPU% = the part of srv CPU% used by the password-hashing threads (nice +10); other@srv% / other@ldr% = what else ran on the server's / loader's core; tries: runs disturbed by others (> $NOISE_MAX % of a core) are repeated, at most $TRIES, the least disturbed kept."
    echo
    echo "| row | endpoint | auth | req/s | p50 ms | p99 ms | × ping | req/s per srv core | × ping per core | requests | errors | srv CPU% | hash CPU% | oha CPU% | other@srv% | other@ldr% | steal% | tries |"
    echo "|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|"
    awk -F'\t' '
        function ratio(a, b,   r) {
            if (b <= 0 || a == "-" || a == "") return "-"
            r = a / b
            return (r >= 0.1 ? sprintf("%.2f×", r) : sprintf("%.5f×", r))
        }
        function percore(r, cpu) { return (r != "-" && cpu + 0 > 0) ? r * 100 / cpu : "-" }
        NR == FNR { if ($1 == "ping" && $4 != "-") { ping = $4; pingc = percore($4, $9) }; next }
        {
            pc = percore($4, $9)
            printf "| %s | `%s` | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n",
                $1, $2, $3, $4, $5, $6, ratio($4, ping), (pc == "-" ? "-" : sprintf(pc < 100 ? "%.1f" : "%.0f", pc)),
                ratio(pc, pingc), $7, $8, $9, $17, $10, $11, $12, $13, $14
        }' "$ROWS_TSV" "$ROWS_TSV"
    echo
    token_rps="$(awk -F'\t' '$1 == "token-me" { print $4 }' "$ROWS_TSV")"
    session_rps="$(awk -F'\t' '$1 == "session-me" { print $4 }' "$ROWS_TSV")"
    ping_rps="$(awk -F'\t' '$1 == "ping" { print $4 }' "$ROWS_TSV")"
    flood_line="$(awk -F'\t' '$1 == "token-me-flood" { print }' "$ROWS_TSV")"
    echo "Targets:"
    echo
    if [ -n "$session_rps" ] && [ -n "$ping_rps" ] && [ "$session_rps" != "-" ] && [ "$ping_rps" != "-" ]; then
        awk -v t="$session_rps" -v p="$ping_rps" 'BEGIN {
            r = t / p; printf "- Session ≥ 0.8× ping: session-me %s req/s ÷ ping %s req/s = **%.2f×** (%s)\n", t, p, r, (r >= 0.8 ? "met" : "NOT met") }'
    fi
    if [ -n "$token_rps" ] && [ -n "$ping_rps" ] && [ "$token_rps" != "-" ] && [ "$ping_rps" != "-" ]; then
        awk -v t="$token_rps" -v p="$ping_rps" 'BEGIN {
            r = t / p; printf "- Token ≥ 0.85× ping: token-me %s req/s ÷ ping %s req/s = **%.2f×** (%s)\n", t, p, r, (r >= 0.85 ? "met" : "NOT met") }'
        awk -F'\t' '$1 == "ping" { p = $4; pc = $9 } $1 == "token-me" { t = $4; tc = $9 }
            END { if (pc > 0 && tc > 0) printf "  Per server core-second: token-me %.0f ÷ ping %.0f = %.2f× (server CPU %s%% / %s%%; when ping leaves the server core partly idle, the loader is the limit and this is the server-side ratio).\n", t * 100 / tc, p * 100 / pc, (t / tc) / (p / pc), tc, pc }' "$ROWS_TSV"
    fi
    if [ -n "$flood_line" ]; then
        echo "$flood_line" | awk -F'\t' -v t="$token_rps" '{
            if (t != "" && t != "-" && $4 != "-") {
                pc = 100 * $4 / t
                printf "- Login flood keeps ≥ 70 %% of Token throughput: %s req/s under flood ÷ %s req/s unloaded = **%.0f %%** (%s)\n", $4, t, pc, (pc >= 70 ? "met" : "NOT met")
            }
            printf "- The flood during the kept run: %s.\n", $16
        }'
    fi
    echo "- Basic and token-obtain: bounded by argon2id (one hash per request on the nice +10 hash thread); compare their req/s with the hash cost, not with ping."
    awk -F'\t' '$1 == "ping" { p = $4 } $1 == "jwt-me" { h = $4 } $1 == "jwt-eddsa-me" { e = $4 } $1 == "jwt-refresh" { r = $4 } $1 == "jwt-refresh-chain" { c = $4 }
        END {
            if (p > 0 && h > 0) printf "- JWT ≥ 0.9× ping: jwt-me (HS256) %s req/s = **%.2f×** (%s)\n", h, h / p, (h / p >= 0.9 ? "met" : "NOT met")
            if (p > 0 && e > 0) printf "- JWT ≥ 0.9× ping: jwt-eddsa-me (EdDSA) %s req/s = **%.2f×** (%s)\n", e, e / p, (e / p >= 0.9 ? "met" : "NOT met")
            if (p > 0 && r > 0) printf "- JWT refresh ≥ 0.2× ping: jwt-refresh %s req/s = **%.2f×** (%s)\n", r, r / p, (r / p >= 0.2 ? "met" : "NOT met")
            if (p > 0 && c > 0) printf "- JWT single-use refresh (default settings) ≥ 0.2× ping: jwt-refresh-chain %s req/s = **%.2f×** (%s)\n", c, c / p, (c / p >= 0.2 ? "met" : "NOT met")
        }' "$ROWS_TSV"
    awk -F'\t' '$1 == "ping" { p = $4 } $1 == "oauth-me" { m = $4 } $1 == "oauth-cc" { c = $4 }
        END {
            if (p > 0 && m > 0) printf "- OAuth2 bearer ≥ 0.8× ping: oauth-me %s req/s = **%.2f×** (%s)\n", m, m / p, (m / p >= 0.8 ? "met" : "NOT met")
            if (p > 0 && c > 0) printf "- OAuth2 client_credentials ≥ 0.2× ping: oauth-cc %s req/s = **%.2f×** (%s)\n", c, c / p, (c / p >= 0.2 ? "met" : "NOT met")
        }' "$ROWS_TSV"
    if [ "$drf_enabled" = 1 ]; then
        drf_token="$(drf_rps /api/token/me)"
        drf_ping="$(drf_rps /api/ping)"
        if [ -n "$drf_token" ] && [ -n "$token_rps" ] && [ "$token_rps" != "-" ]; then
            awk -v t="$token_rps" -v d="$drf_token" -v p="$drf_ping" -v cfg="$DRF_CONFIG" 'BEGIN {
                m = t / d
                printf "- vs DRF (reference `%s`, same session and pinning, wrk): DRF TokenAuthentication %s req/s (DRF ping %s req/s); restguard token-me %s req/s = **%.0f×** DRF (goal ≥ 100×: %s)\n", cfg, d, p, t, m, (m >= 100 ? "met" : "NOT met") }'
            echo "  (DRF table: \`$(basename "$DRF_RESULTS")\` in bench/out/.)"
        else
            echo "- vs DRF: no DRF token-me result${DRF_NOTE:+ ($DRF_NOTE)}."
        fi
    fi
} >"$RESULTS"

cat "$RESULTS"
echo
say "wrote $RESULTS (raw oha JSON and logs in $RAW/)"
