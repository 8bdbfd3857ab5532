#!/bin/bash
# Does the MACVLAN hop the overlay driver puts between a container and its network's VXLAN device cost
# RTT by itself? Compares ping over a VXLAN device moved into the container (A) with ping over a
# MACVLAN on a VXLAN device in a sandbox namespace (B), outside the lab. Root; namespaces rt-*, removed.
# Two "hosts" (namespaces h1,h2) on a veth underlay. Path A: VXLAN devices moved into containers a1,a2.
# Path B: VXLAN in sandboxes s1,s2, MACVLAN (bridge) children in containers b1,b2.
set -e
cleanup() { for n in h1 h2 a1 a2 s1 s2 b1 b2; do ip netns del rt-$n 2>/dev/null || true; done; }
cleanup
for n in h1 h2 a1 a2 s1 s2 b1 b2; do ip netns add rt-$n; ip -n rt-$n link set lo up; done
ip link add u1 netns rt-h1 type veth peer name u2 netns rt-h2
ip -n rt-h1 addr add 192.168.77.1/24 dev u1; ip -n rt-h1 link set u1 up
ip -n rt-h2 addr add 192.168.77.2/24 dev u2; ip -n rt-h2 link set u2 up
for i in 1 2; do
  o=$((3-i))
  # A: pair into container
  ip -n rt-h$i link add va type vxlan id 100 dstport 4789 local 192.168.77.$i remote 192.168.77.$o nolearning
  ip -n rt-h$i link set va netns rt-a$i
  ip -n rt-a$i addr add 10.77.0.$i/24 dev va; ip -n rt-a$i link set va mtu 1450 up
  # B: sandbox + macvlan
  ip -n rt-h$i link add vb type vxlan id 200 dstport 4789 local 192.168.77.$i nolearning proxy
  ip -n rt-h$i link set vb netns rt-s$i
  ip -n rt-s$i link set vb mtu 1450 up
  ip -n rt-s$i link add mb link vb type macvlan mode bridge
  ip -n rt-s$i link set mb netns rt-b$i
  ip -n rt-b$i link set mb address 02:42:0a:4d:01:0$i
  ip -n rt-b$i addr add 10.77.1.$i/24 dev mb; ip -n rt-b$i link set mb mtu 1450 up
done
for i in 1 2; do
  o=$((3-i))
  ip -n rt-s$i neigh add 10.77.1.$o lladdr 02:42:0a:4d:01:0$o dev vb nud permanent
  bridge -n rt-s$i fdb add 02:42:0a:4d:01:0$o dev vb dst 192.168.77.$o self permanent
done
ip netns exec rt-a1 ping -c 3 -q 10.77.0.2 >/dev/null
ip netns exec rt-b1 ping -c 3 -q 10.77.1.2 >/dev/null
# BLOCKS blocks (default 20) of 200 pings 5 ms apart per path, alternating; each block's 10%-trimmed
# mean RTT (ping prints whole microseconds, so medians move in steps), and B/A per block: its median,
# quartiles and a bootstrap 95% interval of the median.
BLOCKS=${BLOCKS:-20}; [ "$BLOCKS" -ge 2 ] || BLOCKS=2
out=$(mktemp)
trap 'rm -f "$out"; cleanup' EXIT
for r in $(seq "$BLOCKS"); do
  ip netns exec rt-a1 ping -c 200 -i 0.005 10.77.0.2 | sed -n 's/.*time=\([0-9.]*\) ms/A \1/p' | sed "s/^/$r /" >> "$out"
  ip netns exec rt-b1 ping -c 200 -i 0.005 10.77.1.2 | sed -n 's/.*time=\([0-9.]*\) ms/B \1/p' | sed "s/^/$r /" >> "$out"
done
python3 - "$out" <<'PY'
import sys, statistics as st
blocks = {}
for line in open(sys.argv[1]):
    r, path, t = line.split()
    blocks.setdefault(int(r), {}).setdefault(path, []).append(float(t) * 1000)
def trimmed(xs):
    xs = sorted(xs); k = len(xs) // 10
    return st.mean(xs[k:len(xs) - k])
a = [trimmed(b["A"]) for b in blocks.values()]
b = [trimmed(b["B"]) for b in blocks.values()]
ratios = sorted(y / x for x, y in zip(a, b))
q = st.quantiles(ratios, n=4)
print(f"A pair-in-container: trimmed mean {st.median(a):.2f} us (median of {len(a)} blocks)")
print(f"B sandbox+macvlan:   trimmed mean {st.median(b):.2f} us")
import random
random.seed(1)
boot = sorted(st.median(random.choices(ratios, k=len(ratios))) for _ in range(2000))
print(f"B/A per block: median {100 * st.median(ratios):.1f}%, quartiles {100 * q[0]:.1f}-{100 * q[2]:.1f}%, "
      f"95% interval of the median {100 * boot[50]:.1f}-{100 * boot[1949]:.1f}% (bootstrap)")
PY

