#!/usr/bin/env bash
# The anchor for agent start-up: a stock `nomad agent -dev` with only the java-crun plugin
# loaded (and, as any sealed lab must, the cloud fingerprinters and unused drivers denied),
# started on the lab host itself. Prints "step <ms since launch> <name>" for http_listening,
# node_ready and driver_healthy, then "idle_cpu <percent of one CPU>" that the ready agent and
# its plugin used over IDLE_S seconds (0: not measured), then stops the agent and removes its
# files. It runs in a scope of its own, so that its cgroup counts exactly its processes.
# usage: bare-agent.sh NOMAD PLUGIN_DIR PLUGIN_BINARY DRIVER HTTP_PORT RPC_PORT SERF_PORT TIMEOUT_S
#        [IDLE_S]
set -u
nomad=$1 plugin_dir=$2 plugin=$3 driver=$4 http=$5 rpc=$6 serf=$7 timeout_s=$8 idle_s=${9:-0}
dir=$(mktemp -d /tmp/lab-bare-agent-XXXX)
cat >"$dir/agent.hcl" <<HCL
plugin_dir = "$plugin_dir"
disable_update_check = true
ports {
  http = $http
  rpc  = $rpc
  serf = $serf
}
client {
  options = {
    "fingerprint.denylist" = "env_aws,env_gce,env_azure,env_digitalocean,consul,vault"
    "driver.denylist"      = "docker,podman,qemu,java,exec,raw_exec"
  }
}
plugin "$plugin" {}
HCL
t0=$(date +%s%N)
scope="lab-bare-agent-$$.scope"
systemd-run --scope --quiet --unit="$scope" \
  "$nomad" agent -dev -bind 127.0.0.1 -config="$dir/agent.hcl" >"$dir/agent.log" 2>&1 &
pid=$!
# shellcheck disable=SC2317  # run by the EXIT trap
cleanup() {
  kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  rm -rf "$dir"
}
trap cleanup EXIT
declare -A reached=()
mark() {
  [ -n "${reached[$1]:-}" ] && return
  reached[$1]=1
  echo "step $(( ($(date +%s%N) - t0) / 1000000 )) $1"
}
deadline=$(( $(date +%s) + timeout_s ))
api="http://127.0.0.1:$http"
while [ "$(date +%s)" -lt "$deadline" ]; do
  kill -0 "$pid" 2>/dev/null || { echo "last the bare agent died"; tail -5 "$dir/agent.log"; exit 3; }
  if curl -sf -m 2 -o /dev/null "$api/v1/status/leader"; then
    mark http_listening
    id=$(curl -sf -m 2 "$api/v1/nodes" | jq -r 'map(select(.Status == "ready"))[0].ID // empty')
    if [ -n "$id" ]; then
      mark node_ready
      healthy=$(curl -sf -m 2 "$api/v1/node/$id" | jq -r --arg d "$driver" '.Drivers[$d].Healthy')
      if [ "$healthy" = true ]; then
        mark driver_healthy
        if [ "$idle_s" != 0 ]; then
          stat=/sys/fs/cgroup/system.slice/$scope/cpu.stat
          usage() { awk '/^usage_usec/ {print $2; found = 1} END {exit !found}' "$stat"; }
          a=$(usage) || { echo "last no usage_usec in $stat (not cgroup v2?)"; exit 5; }
          t=$(date +%s%N)
          sleep "$idle_s"  # the measurement's window, not a wait for a state
          b=$(usage) || { echo "last no usage_usec in $stat"; exit 5; }
          e=$(date +%s%N)
          awk -v a="$a" -v b="$b" -v t="$t" -v e="$e" \
            'BEGIN { printf "idle_cpu %.1f\n", 100 * (b - a) * 1000 / (e - t) }'
        fi
        exit 0
      fi
    fi
  fi
  sleep 0.05
done
echo "last deadline reached"
exit 4
