#!/usr/bin/env bash
# The demo (`make demo`): a 3-host lab on this machine, each host a network namespace running its
# own overlayd; h1 inits a swarm, h2 and h3 join; an attachable overlay network; one container per
# host; each pings the others by IP across VXLAN, then by name through the embedded DNS server
# (127.0.0.11 in every container); then a service with two tasks answers through its virtual IP
# and through the routing mesh on a host that runs none. Then the lab is torn down, unless --keep.
# Every step is printed as the command a user would type.
set -euo pipefail
KEEP=0
[[ "${1:-}" == "--keep" ]] && KEEP=1
BIN="${BIN:-$(swift build --show-bin-path)}"
CTL="$BIN/overlayctl"
step() { printf '\n$ %s\n' "$*"; "$@"; }
lab() { "$CTL" lab exec "$@"; }

cleanup() { [[ $KEEP == 1 ]] || "$CTL" lab down >/dev/null 2>&1 || true; }
trap cleanup EXIT

step "$CTL" lab up --hosts 3
step lab h1 -- overlayctl swarm init --advertise-addr 198.18.0.1
TOKEN=$(lab h1 -- overlayctl swarm join-token -q worker)
step lab h2 -- overlayctl swarm join --token "$TOKEN" 198.18.0.1:2377
step lab h3 -- overlayctl swarm join --token "$TOKEN" 198.18.0.1:2377
step lab h1 -- overlayctl node ls
step lab h1 -- overlayctl network create -d overlay --attachable --subnet 10.10.0.0/24 demo
for h in 1 2 3; do
  step lab h$h -- overlayctl run -d --name c$h --network demo -- sleep infinity
done
declare -A IP
for h in 1 2 3; do
  IP[$h]=$(lab h$h -- overlayctl inspect c$h | sed -n 's/.*"IPAddress" : "\(.*\)".*/\1/p' | head -1)
done
echo; echo "containers: c1=${IP[1]} (h1)  c2=${IP[2]} (h2)  c3=${IP[3]} (h3)"
for from in 1 2 3; do
  for to in 1 2 3; do
    [[ $from == $to ]] && continue
    step lab h$from -- overlayctl exec c$from -- ping -c 2 -W 2 -q "${IP[$to]}"
  done
done
# Names: every container's resolv.conf points at the embedded DNS server, fed by gossip.
step lab h1 -- overlayctl exec c1 -- dig +short c3
step lab h3 -- overlayctl exec c3 -- ping -c 2 -W 2 -q c2
step lab h2 -- overlayctl network inspect demo
# A service: two tasks behind a virtual IP, its port published through the routing mesh.
step lab h1 -- overlayctl service create --name web --network demo --replicas 2 -p 8080:80 -- \
  sh -c 'd=$(mktemp -d) && echo "hello from $OVERLAY_CONTAINER_NAME" > $d/index.html && cd $d && exec python3 -m http.server 80'
for i in $(seq 1 50); do
  [[ $(lab h1 -- overlayctl service ls | awk '$2 == "web" {print $4}') == 2/2 ]] && break
  sleep 0.2
done
step lab h1 -- overlayctl service ps web
for i in $(seq 1 50); do lab h3 -- curl -s -m 1 -o /dev/null http://198.18.0.3:8080/ && break; sleep 0.2; done
# h3 runs no task of web: the mesh sends its port 8080 on to one.
for i in 1 2 3 4; do step lab h3 -- curl -s -m 3 http://198.18.0.3:8080/; done
# The VIP by name from a container (the load balancer spreads new connections over the tasks).
step lab h3 -- overlayctl exec c3 -- sh -c 'dig +short web; curl -s -m 3 http://web/; curl -s -m 3 http://web/'
if [[ $KEEP == 1 ]]; then
  echo; echo "the lab stays up: try \`$CTL lab exec h1 -- overlayctl ps\`; \`$CTL lab down\` removes it"
else
  step "$CTL" lab down
  trap - EXIT
fi
echo; echo "demo: every container reached every other across 3 hosts, by address and by name; a service answered through its VIP and the routing mesh"
