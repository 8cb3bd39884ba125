#!/usr/bin/env bash
# Starts nx-27017, a MongoDB-wire-compatible server that keeps its data in SQLite, on 127.0.0.1 in the
# background, for the earshot-store MongoDB tests and for trying the MongoDB backend without a real mongod.
#
# Usage: scripts/start-mongo-compatible.sh [PORT]     (PORT defaults to 27017)
#
# Prints the server's PID on stdout once the port accepts connections; everything else goes to stderr.
# Data, logs and the PID file live in a fresh temporary directory (named on stderr). Stop it with `kill PID`.
# If EARSHOT_MONGO_WATCH_PID is set, a watchdog stops the server and removes its directory when that
# process exits: the test harness passes its own PID so the server never outlives the test run.
#
# nx-27017 mishandles ObjectId-valued filters and fails every write to a collection that has an index over
# `_id`; earshot-store uses string ids and indexes without `_id` for that reason.
set -euo pipefail

nx_version="0.8.1"
port="${1:-27017}"
python="${PYTHON:-python3}"

if ! [[ "$port" =~ ^[0-9]+$ ]] || ((port < 1 || port > 65535)); then
    echo "start-mongo-compatible: port must be a number from 1 to 65535, got '$port'" >&2
    exit 2
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "start-mongo-compatible: $python is not installed; nx-27017 needs Python 3.10 or newer" >&2
    exit 1
fi

installed_version="$("$python" -c 'import importlib.metadata as m; print(m.version("nx-27017"))' 2>/dev/null || true)"
if [[ "$installed_version" != "$nx_version" ]]; then
    echo "start-mongo-compatible: installing nx-27017==$nx_version" >&2
    "$python" -m pip install --quiet "nx-27017==$nx_version" >&2
fi

data_dir="$(mktemp -d "${TMPDIR:-/tmp}/earshot-nx-27017.XXXXXX")"
log_file="$data_dir/server.log"
# Removed again if start-up fails; kept (and named on stderr) once the server runs.
trap 'rm -rf "$data_dir"' EXIT
echo "start-mongo-compatible: data and logs in $data_dir" >&2

# The PID and log files default to fixed paths in /tmp shared by every instance (a second server would
# refuse to start), so both go into the data directory. `--data-dir` gives each logical database its own
# SQLite file, which keeps tests that use one database each apart. Output goes to a file, never to our
# stdout, so a caller reading stdout to its end is not held open by the server.
"$python" -c 'import sys; from nx_27017.nx_27017 import main; sys.exit(main())' \
    --host 127.0.0.1 --port "$port" \
    --data-dir "$data_dir/databases" \
    --pid-file "$data_dir/nx-27017.pid" \
    --log-file "$data_dir/nx-27017.log" \
    </dev/null >"$log_file" 2>&1 &
server_pid=$!

# Ready means our server logged that it listens and the port answers; checking the port alone would be
# fooled by another process already holding it.
for _ in $(seq 1 300); do
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "start-mongo-compatible: nx-27017 exited during start-up; its log:" >&2
        cat "$log_file" >&2
        exit 1
    fi
    if grep -q "Listening on" "$log_file" 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        break
    fi
    sleep 0.1
done
if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "start-mongo-compatible: nx-27017 did not accept connections on port $port within 30 s; its log:" >&2
    cat "$log_file" >&2
    kill "$server_pid" 2>/dev/null || true
    sleep 0.5
    exit 1
fi

if [[ -n "${EARSHOT_MONGO_WATCH_PID:-}" ]]; then
    watched_pid="$EARSHOT_MONGO_WATCH_PID"
    (
        while kill -0 "$watched_pid" 2>/dev/null && kill -0 "$server_pid" 2>/dev/null; do
            sleep 1
        done
        kill "$server_pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$server_pid" 2>/dev/null || break
            sleep 0.1
        done
        rm -rf "$data_dir"
    ) </dev/null >/dev/null 2>&1 &
fi

trap - EXIT
echo "$server_pid"
