import Foundation
import IPAM
import OverlayAPI
import OverlayModel

/// A new overlay network from a `network create` request: its name, driver and options checked,
/// its subnets allocated from the global IPAM and its VNIs chosen. Pure: the manager stores what
/// it returns.
public enum NetworkAllocator {
    /// The MTU option (Docker's name).
    public static let optMTU = "com.docker.network.driver.mtu"
    /// The VNI list option, one per subnet (Docker's name).
    public static let optVNI = "com.docker.network.driver.overlay.vxlanid_list"

    /// Validates a request and allocates its subnets (from `ipam`, changed only on success) and
    /// VNIs (given with `--opt`, or the lowest free from 4096). `encryptedMTU` is the container
    /// MTU of an encrypted network in this swarm's ESP mode; the rest get the underlay's 1500
    /// less VXLAN's 50. Errors are the API's: 400 for a bad request, 409 for a clash, 507 for
    /// exhausted pools.
    public static func make(
        _ req: NetworkCreateRequest, ipam: inout IPAM, existing: [NetworkRecord], encryptedMTU: UInt32, now: Date = Date()
    ) throws -> NetworkRecord {
        let name = req.name
        guard let first = name.unicodeScalars.first, CharacterSet.alphanumerics.contains(first),
              name.unicodeScalars.allSatisfy({ CharacterSet.alphanumerics.contains($0) || "_.-".unicodeScalars.contains($0) }),
              name.count <= 64 else {
            throw APIError(400, "invalid network name '\(name)': use letters, digits, '_', '.', '-' (starting with a letter or digit, at most 64)")
        }
        guard req.driver == "overlay" else {
            throw APIError(400, "network driver '\(req.driver)' is not available on the cluster: use -d overlay")
        }
        if existing.contains(where: { $0.name == name }) {
            throw APIError(409, "network with name \(name) already exists")
        }
        if req.ingress, existing.contains(where: { $0.ingress }) {
            throw APIError(409, "an ingress network already exists (\(existing.first { $0.ingress }!.name)): remove it first")
        }
        var options: [String: String] = [:]
        for o in req.options {
            let kv = o.split(separator: "=", maxSplits: 1).map(String.init)
            guard let k = kv.first, !k.isEmpty else { throw APIError(400, "invalid --opt '\(o)': use key=value") }
            options[k] = kv.count > 1 ? kv[1] : ""
        }
        var labels: [String: String] = [:]
        for l in req.labels {
            let kv = l.split(separator: "=", maxSplits: 1).map(String.init)
            guard let k = kv.first, !k.isEmpty else { throw APIError(400, "invalid --label '\(l)': use key=value") }
            labels[k] = kv.count > 1 ? kv[1] : ""
        }
        var encrypted = false
        if let e = options["encrypted"] {
            guard ["", "true", "1"].contains(e.lowercased()) else {
                throw APIError(400, "--opt encrypted=\(e): give it without a value (or =true) to encrypt the network")
            }
            if req.ingress { throw APIError(400, "--opt encrypted: the ingress network cannot be encrypted here") }
            encrypted = true
        }
        for k in options.keys where k != Self.optMTU && k != Self.optVNI && k != "encrypted" {
            throw APIError(400, "unknown --opt '\(k)' for the overlay driver (known: encrypted, \(Self.optMTU), \(Self.optVNI))")
        }
        var mtu: UInt32 = encrypted ? encryptedMTU : 1450
        if let m = options[Self.optMTU] {
            guard let v = UInt32(m), (68...9000).contains(v) else {
                throw APIError(400, "--opt \(Self.optMTU)=\(m): the MTU must be a number from 68 to 9000")
            }
            mtu = v
        }
        // Subnets: explicit ones with their gateways, ranges and aux addresses, or one from the pools.
        for (flag, n) in [("--gateway", req.gateways.count), ("--ip-range", req.ipRanges.count)] where n > max(req.subnets.count, 0) {
            throw APIError(400, req.subnets.isEmpty ? "\(flag) needs a --subnet to go with it" : "more \(flag) values than --subnet values")
        }
        var aux: [String: IPAddress] = [:]
        for a in req.auxAddresses {
            let kv = a.split(separator: "=", maxSplits: 1).map(String.init)
            guard kv.count == 2, let ip = IPAddress(kv[1]) else {
                throw APIError(400, "invalid --aux-address '\(a)': use name=address")
            }
            aux[kv[0]] = ip
        }
        if !aux.isEmpty && req.subnets.isEmpty { throw APIError(400, "--aux-address needs a --subnet to go with it") }
        var requests: [SubnetRequest] = []
        for (i, s) in req.subnets.enumerated() {
            guard let cidr = CIDR(s) else { throw APIError(400, "invalid --subnet '\(s)': use a CIDR such as 10.1.0.0/24") }
            var gw: IPAddress?
            if i < req.gateways.count {
                guard let g = IPAddress(req.gateways[i]) else { throw APIError(400, "invalid --gateway '\(req.gateways[i])'") }
                gw = g
            }
            var range: CIDR?
            if i < req.ipRanges.count {
                guard let r = CIDR(req.ipRanges[i]) else { throw APIError(400, "invalid --ip-range '\(req.ipRanges[i])'") }
                range = r
            }
            let mine = aux.filter { cidr.contains($0.value) }
            requests.append(SubnetRequest(subnet: cidr, gateway: gw, ipRange: range, auxAddresses: mine))
        }
        let unmatched = aux.filter { a in !requests.contains { $0.subnet!.contains(a.value) } }
        if let (n, ip) = unmatched.first { throw APIError(400, "--aux-address \(n)=\(ip) is in none of the subnets") }
        let subnetCount = max(requests.count, 1)
        // VNIs: given, or the next free ones from 4096.
        let used = Set(existing.flatMap { $0.subnets.map(\.vni) })
        var vnis: [UInt32] = []
        if let list = options[Self.optVNI] {
            for v in list.split(separator: ",") {
                guard let n = UInt32(v.trimmingCharacters(in: .whitespaces)), (1...0xFF_FFFF).contains(n) else {
                    throw APIError(400, "--opt \(Self.optVNI)=\(list): '\(v)' is not a VNI (1-16777215)")
                }
                guard !used.contains(n), !vnis.contains(n) else {
                    throw APIError(409, "VNI \(n) is already in use by network \(existing.first { $0.subnets.contains { $0.vni == n } }?.name ?? name)")
                }
                vnis.append(n)
            }
            guard vnis.count == subnetCount else {
                throw APIError(400, "--opt \(Self.optVNI) gives \(vnis.count) VNI(s) for \(subnetCount) subnet(s): give one per subnet")
            }
        } else {
            var next: UInt32 = 4096
            while vnis.count < subnetCount {
                if !used.contains(next) { vnis.append(next) }
                next += 1
            }
        }
        let id = NetworkID.random().text
        let spaces: [AddressSpace]
        do { spaces = try ipam.createNetwork(id, subnets: requests.isEmpty ? [SubnetRequest()] : requests) } catch {
            throw APIError(error.code == .poolExhausted ? 507 : 409, error.message.replacingOccurrences(of: "'\(id)'", with: "'\(name)'"))
        }
        let subnets = zip(spaces, vnis).map { space, vni in
            SubnetConfig(
                subnet: space.subnet, gateway: space.gateway, ipRange: space.ipRange, auxAddresses: space.auxAddresses, vni: vni)
        }
        var recorded = options
        recorded[Self.optVNI] = vnis.map(String.init).joined(separator: ",")
        return NetworkRecord(
            id: id, name: name, driver: "overlay", created: now, attachable: req.attachable, internal: req.internal,
            ingress: req.ingress, encrypted: encrypted, subnets: subnets, mtu: mtu, options: recorded, labels: labels)
    }
}
