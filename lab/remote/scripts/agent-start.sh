#!/usr/bin/env bash
# Start one lab Nomad agent as a transient systemd unit and wait, on the lab host itself,
# until it is ready: HTTP answering, leader elected, node registered, node ready, driver
# healthy. Polling here instead of over SSH turns a dozen round trips into one.
#
# usage: agent-start.sh UNIT DIR HTTP_PORT NODE_NAME DRIVER TIMEOUT_S MODE CONFIG_B64 NOMAD
# MODE: dev (nomad agent -dev), persist (client state kept in DIR), or wait (the unit is
# already running, e.g. after a restart: only wait for it).
# Prints "step <ms since start> <name>" once per step reached (the timeline that
# `invoke bench` and `invoke test -v` show), then "node <id>" when ready.
# Exit 0: ready. 2: the unit could not be started. 3: the agent died. 4: deadline reached.
# On failure the last line is "last <what was seen>".
set -u
unit=$1 dir=$2 port=$3 name=$4 driver=$5 timeout_s=$6 mode=$7 config_b64=$8 nomad=$9

t0=$(date +%s%N)
declare -A reached=()
mark() {  # mark STEP: print the step the first time it is reached
  [ -n "${reached[$1]:-}" ] && return
  reached[$1]=1
  echo "step $(( ($(date +%s%N) - t0) / 1000000 )) $1"
}

if [ "$mode" != wait ]; then
  mkdir -p "$dir/data" && chmod 0711 "$dir" || exit 2
  echo "$config_b64" | base64 -d >"$dir/agent.hcl" || exit 2
  # The only `path = "..."` lines of a lab agent's config are its host volumes: scratch dirs
  # (mode 1777, like /tmp) so that a task running as nobody can write to a read-write one.
  grep -oP '^\s*path\s*=\s*"\K[^"]+' "$dir/agent.hcl" | xargs -r install -d -m 1777 || exit 2
  flags=(agent "-config=$dir/agent.hcl")
  # -dev: in-memory state; the client retries registration after 1 s (a persisting client
  # retries a registration that raced the leader election only after 15-30 s).
  [ "$mode" = dev ] && flags=(agent -dev "-config=$dir/agent.hcl")
  # KillMode=process as Nomad's own unit: stopping the agent must not kill the driver's
  # per-container shims, or a restarted agent could not recover its tasks' exit codes.
  systemd-run --unit="$unit" --collect --quiet \
    -p "StandardOutput=append:$dir/agent.log" -p "StandardError=append:$dir/agent.log" \
    -p KillMode=process -p TimeoutStopSec=20 "$nomad" "${flags[@]}" || exit 2
fi
mark unit_started

api="http://127.0.0.1:$port"
pid=$(systemctl show -p MainPID --value "$unit" 2>/dev/null)
deadline=$(( $(date +%s) + timeout_s ))
last="unit started; HTTP port $port not answering yet"
alive() { [ -n "$pid" ] && [ "$pid" != 0 ] && kill -0 "$pid" 2>/dev/null; }
give_up() { echo "last $last"; exit "$1"; }
# Under TCG every process spawned costs CPU that the agent itself needs: poll the HTTP port
# and the leader every 0.25 s, then follow the node with Nomad's blocking queries.
index=0
while :; do
  alive || give_up 3
  [ "$(date +%s)" -ge "$deadline" ] && give_up 4
  if [ -z "${reached[leader]:-}" ]; then
    if leader=$(curl -sf -m 2 "$api/v1/status/leader"); then
      mark http_listening
      if [ -n "$leader" ] && [ "$leader" != '""' ]; then
        mark leader
      else
        last="HTTP up; no leader elected yet"
      fi
    fi
    [ -z "${reached[leader]:-}" ] && { sleep 0.25; continue; }
  fi
  # Blocks until the node list changes (or 2 s pass); the index comes back in a header.
  out=$(curl -sf -m 5 -D - "$api/v1/nodes?index=$index&wait=2s") || { sleep 0.1; continue; }
  index=$(printf '%s' "$out" | tr -d '\r' | sed -n 's/^[Xx]-[Nn]omad-[Ii]ndex: //p' | head -n1)
  index=${index:-0}
  node=$(printf '%s' "$out" | sed -n '/^\[/,$p' |
    jq -r --arg n "$name" --arg d "$driver" 'map(select(.Name == $n))[0] // empty |
      "\(.ID) \(.Status) " + (.Drivers[$d] | if . == null then "none none"
                                           else "\(.Detected) \(.Healthy)" end)')
  if [ -z "$node" ]; then
    last="leader elected; client node $name not registered yet"
    continue
  fi
  mark node_registered
  read -r id status detected healthy <<<"$node"
  if [ "$status" != ready ]; then
    last="node status=$status"
    continue
  fi
  mark node_ready
  if [ "$detected" = true ] && [ "$healthy" = true ]; then
    mark driver_healthy
    echo "node $id"
    exit 0
  fi
  if [ "$detected" = none ]; then
    last="node ready; driver $driver not fingerprinted yet"
  else
    why=$(curl -sf -m 2 "$api/v1/node/$id" | jq -r --arg d "$driver" '.Drivers[$d].HealthDescription')
    last="driver $driver Detected/Healthy: $detected $healthy $why"
  fi
done
