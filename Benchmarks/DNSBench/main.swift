print("dns-bench: not built yet")
