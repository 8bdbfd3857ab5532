/// RFC 7348 VXLAN and the inner protocols (Ethernet, 802.1Q, ARP, IPv4, IPv6, UDP, ICMP): parse and build, no I/O.
public enum VXLANCodecModule {}
