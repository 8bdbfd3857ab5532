print("overlay-bench: not yet")
