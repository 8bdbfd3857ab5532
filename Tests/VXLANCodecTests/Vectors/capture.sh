#!/bin/bash
# Captures the fixed vectors in this folder from real Linux VXLAN devices (run as root).
# Underlay: a veth pair between two namespaces (198.18.0.1 <-> 198.18.0.2, 2001:db8:18::1 <-> ::2).
# vx4: VNI 42 over IPv4, port 4789, nolearning; side a sends with UDP checksums (udpcsum), b without.
# vx6: VNI 43 over IPv6, port 4789, nolearning (IPv6 UDP checksums are mandatory).
# Overlay: 198.19.42.1/24 + fd42::1/64 (a) and 198.19.42.2/24 + fd42::2/64 (b) on vx4;
#          198.19.43.1/24 (a) and 198.19.43.2/24 (b) on vx6.
set -eu
cd "$(dirname "$0")"
A=ovlt-cap-a; B=ovlt-cap-b
cleanup() { ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add $A; ip netns add $B
ip link add ovlt-cap-va netns $A type veth peer name ovlt-cap-vb netns $B
# Offloads off so the captured outer checksums are final (veth would otherwise leave them partial).
ip netns exec $A ethtool -K ovlt-cap-va tx off rx off >/dev/null
ip netns exec $B ethtool -K ovlt-cap-vb tx off rx off >/dev/null
ip -n $A link set ovlt-cap-va address 02:00:00:18:00:01 up
ip -n $B link set ovlt-cap-vb address 02:00:00:18:00:02 up
ip -n $A addr add 198.18.0.1/24 dev ovlt-cap-va
ip -n $B addr add 198.18.0.2/24 dev ovlt-cap-vb
ip -n $A addr add 2001:db8:18::1/64 dev ovlt-cap-va nodad
ip -n $B addr add 2001:db8:18::2/64 dev ovlt-cap-vb nodad
ip -n $A link add vx4 address 02:00:00:42:00:01 type vxlan id 42 dstport 4789 nolearning \
    local 198.18.0.1 remote 198.18.0.2 dev ovlt-cap-va udpcsum
ip -n $B link add vx4 address 02:00:00:42:00:02 type vxlan id 42 dstport 4789 nolearning \
    local 198.18.0.2 remote 198.18.0.1 dev ovlt-cap-vb noudpcsum
ip -n $A link add vx6 address 02:00:00:43:00:01 type vxlan id 43 dstport 4789 nolearning \
    local 2001:db8:18::1 remote 2001:db8:18::2 dev ovlt-cap-va
ip -n $B link add vx6 address 02:00:00:43:00:02 type vxlan id 43 dstport 4789 nolearning \
    local 2001:db8:18::2 remote 2001:db8:18::1 dev ovlt-cap-vb
for ns in $A $B; do
  ip netns exec $ns sysctl -qw net.ipv6.conf.vx4.addr_gen_mode=1 net.ipv6.conf.vx6.disable_ipv6=1
done
ip -n $A addr add 198.19.42.1/24 dev vx4; ip -n $A addr add fd42::1/64 dev vx4 nodad
ip -n $B addr add 198.19.42.2/24 dev vx4; ip -n $B addr add fd42::2/64 dev vx4 nodad
ip -n $A addr add 198.19.43.1/24 dev vx6
ip -n $B addr add 198.19.43.2/24 dev vx6
for ns in $A $B; do ip -n $ns link set vx4 up; ip -n $ns link set vx6 up; done
sleep 1
ip netns exec $B tcpdump -i ovlt-cap-vb -U -s 0 -w vxlan-ipv4-underlay.pcap 'ip and udp port 4789' 2>/dev/null &
T4=$!
ip netns exec $B tcpdump -i ovlt-cap-vb -U -s 0 -w vxlan-ipv6-underlay.pcap 'ip6 and udp port 4789' 2>/dev/null &
T6=$!
sleep 2
ip netns exec $A ping -c 3 -i 0.2 -p 0123456789abcdef 198.19.42.2 >/dev/null
ip netns exec $A ping -6 -c 3 -i 0.2 fd42::2 >/dev/null
ip netns exec $A ping -c 3 -i 0.2 198.19.43.2 >/dev/null
sleep 1
kill $T4 $T6; wait $T4 $T6 2>/dev/null || true
chmod 644 *.pcap
