// ingress-bench: programming time and first-packet latency of the nftables load balancer.
print("ingress-bench: not written yet")
