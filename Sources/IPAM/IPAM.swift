/// Address pools, subnet and address allocation, reservations, snapshots. No I/O.
public enum IPAMModule {}
