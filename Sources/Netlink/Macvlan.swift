import CNetlink
import Glibc
import OverlayModel

/// How a MACVLAN device treats traffic between itself and its siblings on the same lower device
/// (the kernel's `MACVLAN_MODE_*`).
public enum MacvlanMode: UInt32, Hashable, Sendable {
    /// Siblings cannot talk to each other; everything goes out of the lower device.
    case `private` = 1
    /// Sibling traffic goes out and must be reflected by an external switch.
    case vepa = 2
    /// Siblings talk directly (frames between them never touch the lower device).
    case bridge = 4
    /// One MACVLAN takes every frame of the lower device.
    case passthru = 8
}

// Kernel UAPI numbers (linux/rtnetlink.h, linux/if_link.h), stable ABI. The libnl macvlan helpers
// live in a header the CNetlink module map does not include, so the request is built by hand with
// libnl's message API.
private let rtmNewLink: Int32 = 16
private let iflaAddress: Int32 = 1, iflaIfname: Int32 = 3, iflaMTU: Int32 = 4, iflaLink: Int32 = 5
private let iflaLinkinfo: Int32 = 18, iflaNetNSFD: Int32 = 28
private let iflaInfoKind: Int32 = 1, iflaInfoData: Int32 = 2, iflaMacvlanMode: Int32 = 1
private let ifinfomsgSize = 16

extension NetlinkSocket {
    /// Creates a MACVLAN device `name` on `lower` (a link in this socket's namespace). With
    /// `namespace`, the device is created directly in that namespace (it stays tied to `lower`);
    /// `mac` nil lets the kernel pick a random one.
    public func createMacvlan(
        named name: String, lower: String, mode: MacvlanMode = .bridge, mac: MACAddress? = nil, mtu: UInt32? = nil,
        namespace target: NetworkNamespace? = nil
    ) throws(NetlinkError) {
        let targetWhere = target.map { ", created in namespace \($0.name)" } ?? ""
        let op = "add link \(name) (macvlan on \(lower), mode \(mode)\(targetWhere))\(inNamespace)"
        try validateLinkName(name, op)
        try withExtendedLifetime(target) { () throws(NetlinkError) in
            try withSocket { sock throws(NetlinkError) in
                let lowerIndex = try self.index(of: lower, sock, for: op)
                guard let msg = nlmsg_alloc_simple(rtmNewLink, NLM_F_CREATE | NLM_F_EXCL) else {
                    throw NetlinkError(.system, operation: op, reason: "libnl could not allocate a message (out of memory)")
                }
                var sent = false
                defer { if !sent { nlmsg_free(msg) } }
                var header = [UInt8](repeating: 0, count: ifinfomsgSize)  // struct ifinfomsg, AF_UNSPEC
                try nlCheck(header.withUnsafeMutableBytes { nlmsg_append(msg, $0.baseAddress, ifinfomsgSize, Int32(NLMSG_ALIGNTO)) }, op)
                try nlCheck(nla_put_string(msg, iflaIfname, name), op)
                try nlCheck(nla_put_u32(msg, iflaLink, UInt32(bitPattern: lowerIndex)), op)
                if let mtu { try nlCheck(nla_put_u32(msg, iflaMTU, mtu), op) }
                if let mac {
                    let bytes = mac.bytes
                    try nlCheck(bytes.withUnsafeBytes { nla_put(msg, iflaAddress, Int32($0.count), $0.baseAddress) }, op)
                }
                if let target { try nlCheck(nla_put_u32(msg, iflaNetNSFD, UInt32(bitPattern: target.fileDescriptor)), op) }
                guard let info = nla_nest_start(msg, iflaLinkinfo) else { throw NetlinkError.invalid(op, "message too long") }
                try nlCheck(nla_put_string(msg, iflaInfoKind, "macvlan"), op)
                guard let data = nla_nest_start(msg, iflaInfoData) else { throw NetlinkError.invalid(op, "message too long") }
                try nlCheck(nla_put_u32(msg, iflaMacvlanMode, mode.rawValue), op)
                try nlCheck(nla_nest_end(msg, data), op)
                try nlCheck(nla_nest_end(msg, info), op)
                sent = true
                let rc = nl_send_sync(sock, msg)  // frees msg
                if rc == -NLE_OPNOTSUPP {
                    throw NetlinkError(
                        .unsupported, operation: op,
                        reason: "this kernel has no 'macvlan' link type (built without it, or its module is not loaded)")
                }
                try nlCheck(rc, op)
            }
        }
    }
}
