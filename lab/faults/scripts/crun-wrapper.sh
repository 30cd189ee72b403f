#!/bin/sh
# LAB_FAULT_WRAPPER crun_failing: installed by lab.faults, healed by lab.faults.sweep
# A stand-in for crun: for the subcommands in $on it fails the way crun does (a JSON error
# line in the --log file, the message on stderr, exit 1); anything else execs the real crun.
# lab/faults/crun.py replaces the lines from here to "end of settings" when it installs it.
real=/usr/bin/crun.lab-hidden
msg='lab fault: crun_failing injected this error'
msg_json='"lab fault: crun_failing injected this error"'
on='run create'
# end of settings
log=
sub=
want=
for arg in "$@"; do
  if [ -n "$want" ]; then
    [ "$want" = --log ] && log=$arg
    want=
    continue
  fi
  case $arg in
    --log=*) log=${arg#--log=} ;;
    --root|--log|--log-format|--log-level|--cgroup-manager|--handler) want=$arg ;;
    -*) ;;
    *) sub=$arg; break ;;
  esac
done
case " $on " in
  *" $sub "*)
    log=${log#file:}
    case $log in
      ''|journald:*|syslog:*) ;;
      *) printf '{"msg": %s, "level": "error", "time": "%s"}\n' "$msg_json" \
           "$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)" >> "$log" ;;
    esac
    printf '%s\n' "$msg" >&2
    exit 1 ;;
esac
exec "$real" "$@"
