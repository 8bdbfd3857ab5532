# swift-overlay: the quick start is `make demo` (a 3-host lab with an overlay between them) and
# `make test`. Both install what they need first (`make deps`), so they work on a fresh Debian 12
# machine with Swift 6.3 installed, run as root (the lab and the kernel tests need it).

SWIFT ?= swift
SHELL := /bin/bash

# Debian packages the build, the tests and the lab need. The tests start their own prometheus and
# etcd (etcd-server) on ports of their own: the packages' services must not run (see deps).
DEPS := pkg-config libnl-3-dev libnl-route-3-dev libssl-dev libnftables-dev libsqlite3-dev iproute2 nftables \
        iputils-ping fping iperf3 dnsutils dnsmasq-base dnsperf tcpdump serf curl python3 openssl prometheus etcd-server etcd-client \
        containernetworking-plugins iptables podman busybox-static docker.io

.PHONY: deps build test demo bench lab-clean install docs

# Installs what is missing. The install starts no service (a policy-rc.d that says no, unless the
# machine has one), and a distro etcd found running is stopped and disabled.
deps:
	@missing=""; for p in $(DEPS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "install ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "make deps: installing$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  policy=""; if [ ! -e /usr/sbin/policy-rc.d ]; then \
	    policy=1; printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d; fi; \
	  apt-get update -qq && apt-get install -y -qq $$missing >/dev/null; rc=$$?; \
	  if [ -n "$$policy" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
	  [ $$rc = 0 ] || { echo "make deps: apt-get install$$missing failed" >&2; exit 1; }; \
	fi; \
	if [ -d /run/systemd/system ]; then systemctl disable --now etcd.service >/dev/null 2>&1 || true; fi; \
	if [ -f /var/run/etcd.pid ]; then /etc/init.d/etcd stop >/dev/null 2>&1 || true; fi

build: deps
	$(SWIFT) build

# Every test, kernel ones included (they run for real as root, in namespaces they create and remove).
# The long blocking lab suites (the driver at 1,000+ endpoints, the daemons in a lab) run on their
# own after the rest: on 2 cores they would hold both of Swift's cooperative threads and starve the
# timing-sensitive gossip tests running beside them.
LAB_TESTS := DaemonLabTests|AuthorizationLabTests|ClusterStoreLabTests|ManagerHALabTests|CNILabTests|PodmanLabTests|OperatorLabTests|InstallLabTests|ListFormatLabTests|NodeAvailabilityLabTests|ContainerLifeLabTests|NetworkConnectLabTests|MetricsLabTests|SecurityLabTests|RogueGossipLabTests|ServiceLabTests|DNSLabTests|DNSServerTests|EncryptedLabTests|EncryptedTests|EncryptedThreeHostTests|EncryptedWireTests|EncryptedUDPTests
# The shared store's suites (real etcd clusters of up to three fsyncing members; SQLite with a
# synchronous commit per write, three writers at once) run on their own: in the first phase they
# held the machine while the API and gossip tests' timers ran (CI runs saw a 30 s stall of every
# test there), and beside the scale tests (a thousand namespaces) their etcd members did not come
# up within 15 s and loopback connections timed out.
ETCD_TESTS := SharedStoreTests|EtcdStoreTests|EtcdCredentialsTests|ManagerElectionTests
# Three dockerds (each with its containerd) run on their own too: beside the lab suites' etcd
# members, a CI run saw etcd miss its 3 s deadline in ClusterStoreLabTests.
DOCKER_TESTS := DockerLabTests
HEAVY_TESTS := ScaleTests|$(ETCD_TESTS)|$(LAB_TESTS)|$(DOCKER_TESTS)
test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --skip '$(HEAVY_TESTS)'
	$(SWIFT) test --skip-build --filter 'ScaleTests'
	$(SWIFT) test --skip-build --filter '$(ETCD_TESTS)'
	$(SWIFT) test --skip-build --filter '$(LAB_TESTS)'
	$(SWIFT) test --skip-build --filter '$(DOCKER_TESTS)'
	$(MAKE) --no-print-directory docs

# The SDK's documentation: a DocC archive for every library product, in
# .build/plugins/Swift-DocC/outputs. A warning (an unresolved symbol link, ...) fails it.
DOC_TARGETS := OverlayModel OverlayCrypto VXLANCodec IPAM Gossip IPsecKeys Netlink PacketFilter GWBridge Ingress \
               Discovery DiscoveryServer OverlayDriver OverlayAPI DockerPlugin ClusterControl OverlayTestKit
docs: deps
	@$(SWIFT) package --disable-sandbox generate-documentation $(addprefix --target ,$(DOC_TARGETS)) > .build/docs.log 2>&1 \
	  || { cat .build/docs.log; exit 1; }
	@if grep "warning:" .build/docs.log | grep -v "unhandled; explicitly declare them as resources"; then \
	  echo "make docs: the documentation has warnings (above)"; exit 1; fi
	@echo "make docs: $(words $(DOC_TARGETS)) archives in .build/plugins/Swift-DocC/outputs, no warnings"

# The demo: a 3-host lab, each host running overlayd; init, join, an overlay network, a container
# per host pinging the others (Scripts/demo.sh prints every command). `make demo KEEP=1` leaves it up.
demo: deps
	$(SWIFT) build --product overlayd
	$(SWIFT) build --product overlayctl
	BIN=$$($(SWIFT) build --show-bin-path) Scripts/demo.sh $(if $(KEEP),--keep,)

# Installs overlayd, overlayctl, the systemd unit (Type=notify), /etc/overlayd/daemon.json (kept if
# there is one), man pages (swift-argument-parser's generate-manual plugin) and shell completions.
# `make install PREFIX=/opt/overlay SYSCONFDIR=/opt/overlay/etc` installs elsewhere; CONFIG=debug
# installs the debug build (the tests do, to reuse what they built).
PREFIX ?= /usr/local
SYSCONFDIR ?= /etc
CONFIG ?= release
install: deps
	$(SWIFT) build -c $(CONFIG) --product overlayd
	$(SWIFT) build -c $(CONFIG) --product overlayctl
	$(SWIFT) build -c $(CONFIG) --product overlay-cni
	$(SWIFT) package --allow-writing-to-package-directory generate-manual --configuration $(CONFIG) --multi-page >/dev/null
	BIN=$$($(SWIFT) build -c $(CONFIG) --show-bin-path) PREFIX=$(PREFIX) SYSCONFDIR=$(SYSCONFDIR) \
	  MANPAGES=.build/plugins/GenerateManual/outputs Scripts/install.sh

# Benchmarks print ratios against a baseline measured in the same run; see Documentation/Performance.md.
bench: deps
	$(SWIFT) build -c release --product overlay-bench
	$$($(SWIFT) build -c release --show-bin-path)/overlay-bench all

# Removes every namespace the lab, the demo or a test left behind (they are all prefixed "ovl").
# Also kills what is left in the labs' cgroups (`lab up` starts each host's overlayd, and so the
# containers it starts, in <cgroup2>/swift-overlay/<lab>/<host>) and removes them.
lab-clean:
	@for ns in $$(ip netns list | awk '{print $$1}' | grep '^ovl'); do ip netns del $$ns && echo "removed $$ns"; done; true
	@mp=$$(awk '{for (i = 7; i < NF; i++) if ($$i == "-") { if ($$(i+1) == "cgroup2") { print $$5; exit } break }}' /proc/self/mountinfo); \
	if [ -n "$$mp" ] && [ -d "$$mp/swift-overlay" ]; then \
	  for lab in "$$mp"/swift-overlay/*/; do [ -f "$$lab/cgroup.procs" ] || continue; \
	    echo 1 > "$$lab/cgroup.kill" 2>/dev/null || cat "$$lab"/*/cgroup.procs | xargs -r kill -9; echo "killed cgroup $$lab"; done; \
	  sleep 1; for d in "$$mp"/swift-overlay/*/*/ "$$mp"/swift-overlay/*/; do [ -f "$$d/cgroup.procs" ] && rmdir "$$d"; done; \
	fi; true
