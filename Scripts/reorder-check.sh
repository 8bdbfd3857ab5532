#!/bin/bash
# Why do single-stream iperf3 runs over the lab's VXLAN paths spread so widely (Performance.md,
# "2026-11-27 evening")? Builds a copy of the bench's baseline (two hosts on a switch bridge, a VXLAN
# pair moved into two containers) and runs iperf3 -t SECONDS, RUNS times, printing per run:
# Gbit/s, TCP retransmissions, the receiver's out-of-order queue count, and the CPU stolen by the
# hypervisor on CPU 0 and CPU 1 (ticks of 1/100 s). Then again with RPS on host 1's veth steering
# the ACKs to CPU 0, the client's CPU. Root; namespaces ro-*, removed at exit.
# Usage: Scripts/reorder-check.sh [RUNS] [SECONDS]
set -e
RUNS=${1:-8}; SECS=${2:-3}
N="sw h1 h2 c1 c2"
cleanup() { pkill -f "iperf3 -s -D -A 1 -p 5399" 2>/dev/null || true; for n in $N; do ip netns del ro-$n 2>/dev/null || true; done; }
trap cleanup EXIT
cleanup
for n in $N; do ip netns add ro-$n; ip -n ro-$n link set lo up; done
ip -n ro-sw link add br0 type bridge; ip -n ro-sw link set br0 up
for i in 1 2; do
  o=$((3-i))
  ip -n ro-sw link add p$i type veth peer name eth0 netns ro-h$i
  ip -n ro-sw link set p$i master br0; ip -n ro-sw link set p$i up
  ip -n ro-h$i addr add 198.19.0.$i/24 dev eth0; ip -n ro-h$i link set eth0 up
done
for i in 1 2; do
  o=$((3-i))
  ip -n ro-h$i link add vxc mtu 1450 type vxlan id 400 local 198.19.0.$i remote 198.19.0.$o dstport 4789 dev eth0
  ip -n ro-h$i link set vxc netns ro-c$i
  ip -n ro-c$i addr add 10.193.0.$i/24 dev vxc; ip -n ro-c$i link set vxc up
done
ip netns exec ro-c1 ping -c 2 -i 0.2 10.193.0.2 >/dev/null
ip netns exec ro-c2 iperf3 -s -D -A 1 -p 5399 >/dev/null
sleep 0.3
steal() { awk '/^cpu[01] /{printf "%s ", $9}' /proc/stat; }
ofo() { ip netns exec ro-c2 nstat -az TcpExtTCPOFOQueue | awk '/TCPOFOQueue/{print $2}'; }
runs() {
  for r in $(seq "$RUNS"); do
    s0=($(steal)); q0=$(ofo)
    out=$(ip netns exec ro-c1 iperf3 -A 0 -c 10.193.0.2 -p 5399 -t "$SECS" -J \
      | python3 -c 'import json,sys; e=json.load(sys.stdin)["end"]; print("%.2f %d" % (e["sum_received"]["bits_per_second"]/1e9, e["sum_sent"].get("retransmits",0)))')
    s1=($(steal)); q1=$(ofo)
    set -- $out
    printf "  %6s Gbit/s  %5s retransmits  %6s out-of-order  steal cpu0 %3s cpu1 %3s\n" \
      "$1" "$2" $((q1-q0)) $((s1[0]-s0[0])) $((s1[1]-s0[1]))
  done
}
echo "no RPS (the lab as the bench uses it):"
runs
ip netns exec ro-h1 sh -c 'echo 1 > /sys/class/net/eth0/queues/rx-0/rps_cpus'
echo "RPS on host 1's veth steering ACKs to CPU 0:"
runs
