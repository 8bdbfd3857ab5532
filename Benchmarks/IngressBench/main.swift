import Ingress

print("ingress-bench: \(IngressModule.role)")
