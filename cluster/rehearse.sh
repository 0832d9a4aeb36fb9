#!/usr/bin/env bash
# The on-premise path end to end on this machine: `ray up cluster/onprem.yaml` with this machine
# (127.0.0.1, over SSH) as the head, `ray submit ... run_search.py` of a short smoke search, a check
# that the experiment holds a finished results table, and `ray down`, leaving nothing running.
#
#   cluster/rehearse.sh [run_search.py ARGS]      # default: a 2-trial, 2-epoch smoke search
#
# What it changes on this machine, and puts back on exit (also on failure or Ctrl-C):
# - an SSH server on 127.0.0.1:22 (openssh-server and rsync installed with apt-get if missing;
#   an sshd already listening there is used as it is),
# - a key of its own in ~/.ssh/authorized_keys (its line is removed at the end),
# - a block in ~/.bashrc that puts this Python's folder first on the login shell's PATH (Ray runs
#   every remote command in a login shell; onprem.yaml's setup commands are where a real server
#   gets Ray and the project, and here this Python already has both, so they are not rerun).
# Everything else comes from cluster/onprem.yaml as shipped: its start commands, file mounts and
# settings. Ray's `ray down` runs `ray stop`, which stops every Ray on the machine: run the
# rehearsal when nothing else here uses Ray.
#
# Environment: ASTRA_PYTHON (default .venv/bin/python), ASTRA_REHEARSAL_KEEP=1 keeps the work folder.
set -euo pipefail

REPO="$(cd "$(dirname "$0")/.." && pwd)"
PYTHON="${ASTRA_PYTHON:-$REPO/.venv/bin/python}"
[[ -x "$PYTHON" ]] || { echo "rehearse.sh: no Python at $PYTHON (run make setup, or set ASTRA_PYTHON)" >&2; exit 2; }
BIN="$(cd "$(dirname "$PYTHON")" && pwd)"
RAY="$BIN/ray"
[[ -x "$RAY" ]] || { echo "rehearse.sh: $BIN has no ray command (pip install -e . there)" >&2; exit 2; }
WORK="$(mktemp -d /tmp/astra-rehearsal.XXXXXX)"
TAG="astra-rehearsal-$$"
CONFIG="$WORK/onprem.yaml"
SSHD_PID=""
CLUSTER_UP=0
MARK_BEGIN="# >>> $TAG >>>"
MARK_END="# <<< $TAG <<<"

step() { printf '\n== %s (%s)\n' "$*" "$(date +%T)"; }

cleanup() {
    local rc=$?
    set +e
    if [[ $CLUSTER_UP == 1 ]]; then
        step "ray down"
        "$RAY" down -y "$CONFIG" >"$WORK/down.log" 2>&1 || cat "$WORK/down.log"
    fi
    [[ -n "$SSHD_PID" ]] && kill "$SSHD_PID" 2>/dev/null
    if [[ -f ~/.ssh/authorized_keys ]]; then
        grep -v -- "$TAG" ~/.ssh/authorized_keys >"$WORK/keys" || true
        cat "$WORK/keys" >~/.ssh/authorized_keys
    fi
    if [[ -f ~/.bashrc ]]; then
        sed -i "\\|^$MARK_BEGIN\$|,\\|^$MARK_END\$|d" ~/.bashrc
    fi
    rm -f "/tmp/ray/cluster-astra-onprem.state" "/tmp/ray/cluster-astra-onprem.lock"
    if [[ "${ASTRA_REHEARSAL_KEEP:-0}" == 1 ]]; then echo "kept $WORK"; else rm -rf "$WORK"; fi
    exit $rc
}
trap cleanup EXIT
trap 'exit 130' INT TERM

step "SSH server on 127.0.0.1:22"
if ! command -v /usr/sbin/sshd >/dev/null || ! command -v rsync >/dev/null; then
    [[ $(id -u) == 0 ]] || { echo "rehearse.sh: needs openssh-server and rsync (apt-get, as root)" >&2; exit 2; }
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server rsync >"$WORK/apt.log" 2>&1 \
        || { apt-get update -q >>"$WORK/apt.log" 2>&1 \
             && DEBIAN_FRONTEND=noninteractive apt-get install -y -q openssh-server rsync >>"$WORK/apt.log" 2>&1; } \
        || { tail -20 "$WORK/apt.log" >&2; exit 2; }
fi
mkdir -p ~/.ssh && chmod 700 ~/.ssh
ssh-keygen -q -t ed25519 -N "" -C "$TAG" -f "$WORK/key"
cat "$WORK/key.pub" >>~/.ssh/authorized_keys && chmod 600 ~/.ssh/authorized_keys
if "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', 22), 1)" 2>/dev/null; then
    echo "an SSH server already listens on 127.0.0.1:22; using it"
else
    mkdir -p /run/sshd
    ls /etc/ssh/ssh_host_*_key >/dev/null 2>&1 || ssh-keygen -A
    /usr/sbin/sshd -D -o ListenAddress=127.0.0.1 -o PasswordAuthentication=no \
        -o PidFile="$WORK/sshd.pid" &
    SSHD_PID=$!
    for _ in $(seq 50); do
        "$PYTHON" -c "import socket; socket.create_connection(('127.0.0.1', 22), 1)" 2>/dev/null && break
        sleep 0.2
    done
fi
ssh -q -o BatchMode=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null -i "$WORK/key" \
    "$(id -un)@127.0.0.1" true || { echo "rehearse.sh: SSH to 127.0.0.1 with the new key failed" >&2; exit 1; }
{ echo "$MARK_BEGIN"; echo "export PATH=\"$BIN:\$PATH\""; echo "$MARK_END"; } >>~/.bashrc

step "the rehearsal's cluster file, from cluster/onprem.yaml"
"$PYTHON" - "$REPO/cluster/onprem.yaml" "$CONFIG" "$WORK" "$(id -un)" <<'EOF'
import sys
import yaml
source, target, work, user = sys.argv[1:]
config = yaml.safe_load(open(source, encoding="utf-8"))
config["provider"].update(head_ip="127.0.0.1", worker_ips=[])  # this machine is the whole cluster
config["auth"] = {"ssh_user": user, "ssh_private_key": f"{work}/key"}
config["min_workers"] = config["max_workers"] = 0
config["file_mounts"] = {f"{work}/astra": config["file_mounts"]["~/astra"]}
# This Python already holds Ray and the project: check that the login shell finds them instead.
config["setup_commands"] = ['python -c "import astra, ray; print(\'head has ray\', ray.__version__)"']
yaml.safe_dump(config, open(target, "w", encoding="utf-8"), sort_keys=False)
EOF
echo "$CONFIG"

step "data: a small simulated dataset"
"$PYTHON" -m astra synth "$WORK/data" --games 12 --half-minutes 3 --quiet

step "ray up"
cd "$REPO"
CLUSTER_UP=1
"$RAY" up -y --no-config-cache "$CONFIG" >"$WORK/up.log" 2>&1 || { tail -40 "$WORK/up.log"; exit 1; }
tail -3 "$WORK/up.log"

step "ray submit run_search.py"
ARGS=("$@")
if [[ ${#ARGS[@]} == 0 ]]; then
    ARGS=(--space smoke --trials 2 --concurrent 2 train.epochs=2 train.warmup_epochs=0 train.patience_epochs=2)
fi
"$RAY" submit "$CONFIG" "$REPO/run_search.py" -- --data "$WORK/data" --experiment "$WORK/experiment" "${ARGS[@]}"

step "the experiment holds a finished results table"
"$PYTHON" - "$WORK/experiment/results.parquet" <<'EOF'
import sys
import polars as pl
table = pl.read_parquet(sys.argv[1])
finished = table.filter(pl.col("status") == "finished").height
print(f"{sys.argv[1]}: {table.height} trials, {finished} finished")
sys.exit(0 if finished >= 1 else 1)
EOF

step "ray down"
"$RAY" down -y "$CONFIG" >"$WORK/down.log" 2>&1 || { cat "$WORK/down.log"; exit 1; }
CLUSTER_UP=0
sleep 2
if pgrep -f "gcs_server.*--gcs_server_port=6379" >/dev/null; then
    echo "rehearse.sh: Ray is still running after ray down" >&2; exit 1
fi
echo "rehearsal passed: ray up, ray submit, results, ray down"
