import CNetlink
import COverlayShims
/// Swift API over libnl: namespaces, links, addresses, routes, neighbours, FDB, sysctls.
public enum NetlinkModule {}
