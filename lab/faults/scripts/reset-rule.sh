#!/bin/bash
# iptables rules that answer TCP with a RST (lab/faults/network.py). Every rule a fault adds
# carries the comment lab-fault:<token>.
#   reset-rule.sh present          exit 3 unless iptables is installed
#   reset-rule.sh add RULE...      insert RULE (an INPUT rule spec) at the top of INPUT
#   reset-rule.sh del RULE...      delete RULE until iptables -C no longer finds it
#   reset-rule.sh check TAG RULE...   exit 0 iff RULE is in INPUT; prints it
#   reset-rule.sh gone TAG         exit 0 iff no rule tagged TAG is left in INPUT
#   reset-rule.sh scan | sweep     every lab-fault rule in any chain; sweep deletes them
set -u
tag=lab-fault  # lab.faults.RULE_TAG

sub=${1:-}
shift
case $sub in
  present)
    command -v iptables >/dev/null || { echo "iptables is not installed in the lab host: add" \
      "the iptables package to the box" >&2; exit 3; }
    ;;
  add)
    iptables -w -I INPUT "$@"
    ;;
  del)
    while iptables -w -C INPUT "$@" 2>/dev/null; do iptables -w -D INPUT "$@" || exit; done
    ;;
  check)
    token=$1
    shift
    iptables -w -C INPUT "$@" && iptables -w -S INPUT | grep -- "$token"
    ;;
  gone)
    if iptables -w -S INPUT | grep -q -- "$1"; then
      echo "the rule $1 is still in INPUT" >&2
      exit 1
    fi
    ;;
  scan)
    if command -v iptables >/dev/null; then iptables -w -S 2>/dev/null | grep -- "$tag"; fi
    true
    ;;
  sweep)
    if command -v iptables >/dev/null; then
      iptables -w -S 2>/dev/null | grep -- "--comment \"\?$tag" | sed 's/^-A /-D /' \
        | while read -r rule; do
          eval "iptables -w $rule" && echo "healed: iptables $rule"
        done
    fi
    true
    ;;
  *)
    echo "usage: ${0##*/} present|add|del|check|gone|scan|sweep ..." >&2
    exit 2
    ;;
esac
