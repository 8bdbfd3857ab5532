import COverlayShims
import Glibc

/// Whether this kernel can do ESP with AES-GCM (RFC 4106) in xfrm, as Docker's encrypted overlay
/// needs: found by trying, not by reading versions or module lists.
public enum KernelIPsecSupport: Sendable, Equatable, CustomStringConvertible {
    /// The kernel took a transport-mode ESP SA with `rfc4106(gcm(aes))`.
    case available
    /// It refused; the reason is the kernel's own (errno and its extended-ack text), e.g.
    /// "Function not implemented: Requested AEAD algorithm not found".
    case unavailable(String)

    public var description: String {
        switch self {
        case .available: "available"
        case .unavailable(let why): "unavailable (\(why))"
        }
    }
}

/// The kernel IPsec probe.
public enum KernelIPsec {
    /// Adds a transport-mode ESP SA with `rfc4106(gcm(aes))` (AES-128, 8-byte ICV, Docker's SA
    /// shape) through xfrm netlink and deletes it again, on a thread in a new, empty network
    /// namespace that disappears with the thread, so nothing is ever left in a real one.
    /// Takes a few milliseconds; needs CAP_NET_ADMIN and CAP_SYS_ADMIN (for the namespace).
    public static func probe() -> KernelIPsecSupport {
        var rc: Int32 = 0
        var message = [CChar](repeating: 0, count: 256)
        do {
            try NamespaceThread.run("probe kernel ESP") {
                rc = ovl_unshare_net()
                if rc == 0 { rc = ovl_xfrm_probe_esp_gcm(&message, message.count) }
            }
        } catch {
            return .unavailable("the probe could not run: \(error)")
        }
        guard rc != 0 else { return .available }
        let text = message.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        let errnoText = String(cString: strerror(-rc))
        return .unavailable(text.isEmpty ? errnoText : "\(errnoText): \(text)")
    }
}
