print("two-host-overlay: arrives with the data-plane issue")
