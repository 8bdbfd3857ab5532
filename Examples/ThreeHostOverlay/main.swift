print("three-host-overlay: not yet")
