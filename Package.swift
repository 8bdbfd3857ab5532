// swift-tools-version: 6.2
// swift-overlay: multi-host overlay networks (VXLAN, gossip, IPAM, DNS, VIPs) as Swift libraries,
// a reference daemon (overlayd) and a CLI (overlayctl). See README.md and ../shared/DESIGN.md.
import PackageDescription

let nioCore = Target.Dependency.product(name: "NIOCore", package: "swift-nio")
let nioPosix = Target.Dependency.product(name: "NIOPosix", package: "swift-nio")
let argumentParser = Target.Dependency.product(name: "ArgumentParser", package: "swift-argument-parser")
let logging = Target.Dependency.product(name: "Logging", package: "swift-log")
let nioHTTP1 = Target.Dependency.product(name: "NIOHTTP1", package: "swift-nio")
let nioTLS = Target.Dependency.product(name: "NIOTLS", package: "swift-nio")
let nioSSL = Target.Dependency.product(name: "NIOSSL", package: "swift-nio-ssl")
let x509 = Target.Dependency.product(name: "X509", package: "swift-certificates")
let crypto = Target.Dependency.product(name: "Crypto", package: "swift-crypto")
let grdb = Target.Dependency.product(name: "GRDB", package: "GRDB.swift")
let hummingbird = Target.Dependency.product(name: "Hummingbird", package: "hummingbird")
let hummingbirdCore = Target.Dependency.product(name: "HummingbirdCore", package: "hummingbird")
let httpTypes = Target.Dependency.product(name: "HTTPTypes", package: "swift-http-types")
let nioHTTPTypes = Target.Dependency.product(name: "NIOHTTPTypes", package: "swift-nio-extras")
let serviceLifecycle = Target.Dependency.product(name: "ServiceLifecycle", package: "swift-service-lifecycle")
let unixSignals = Target.Dependency.product(name: "UnixSignals", package: "swift-service-lifecycle")
let metrics = Target.Dependency.product(name: "Metrics", package: "swift-metrics")
let prometheus = Target.Dependency.product(name: "Prometheus", package: "swift-prometheus")
let asyncHTTPClient = Target.Dependency.product(name: "AsyncHTTPClient", package: "async-http-client")

let package = Package(
    name: "swift-overlay",
    products: [
        .library(name: "OverlayModel", targets: ["OverlayModel"]),
        .library(name: "OverlayCrypto", targets: ["OverlayCrypto"]),
        .library(name: "VXLANCodec", targets: ["VXLANCodec"]),
        .library(name: "IPAM", targets: ["IPAM"]),
        .library(name: "Gossip", targets: ["Gossip"]),
        .library(name: "IPsecKeys", targets: ["IPsecKeys"]),
        .library(name: "Netlink", targets: ["Netlink"]),
        .library(name: "PacketFilter", targets: ["PacketFilter"]),
        .library(name: "GWBridge", targets: ["GWBridge"]),
        .library(name: "Ingress", targets: ["Ingress"]),
        .library(name: "Discovery", targets: ["Discovery"]),
        .library(name: "DiscoveryServer", targets: ["DiscoveryServer"]),
        .library(name: "OverlayDriver", targets: ["OverlayDriver"]),
        .library(name: "OverlayAPI", targets: ["OverlayAPI"]),
        .library(name: "DockerPlugin", targets: ["DockerPlugin"]),
        .library(name: "ClusterControl", targets: ["ClusterControl"]),
        .library(name: "OverlayTestKit", targets: ["OverlayTestKit"]),
        .executable(name: "overlayd", targets: ["overlayd"]),
        .executable(name: "overlayctl", targets: ["overlayctl"]),
        .executable(name: "overlay-cni", targets: ["overlay-cni"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/swiftlang/swift-docc-plugin.git", from: "1.5.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        // C layers: system libraries found by pkg-config, and one shim target for what Swift
        // cannot import (macros, unions, variadics).
        .systemLibrary(
            name: "CNetlink", pkgConfig: "libnl-route-3.0",
            providers: [.apt(["libnl-3-dev", "libnl-route-3-dev"])]),
        .systemLibrary(name: "COpenSSL", pkgConfig: "openssl", providers: [.apt(["libssl-dev"])]),
        .systemLibrary(name: "CNFTables", pkgConfig: "libnftables", providers: [.apt(["libnftables-dev"])]),
        .target(name: "COverlayShims", dependencies: ["CNetlink"]),

        // Value types and protocol libraries: no I/O.
        .target(name: "OverlayModel"),
        .target(name: "OverlayCrypto", dependencies: ["COpenSSL"]),
        .target(name: "VXLANCodec", dependencies: ["OverlayModel", nioCore], exclude: ["README.md"]),
        .target(name: "IPAM", dependencies: ["OverlayModel"], exclude: ["README.md"]),
        .target(
            name: "Gossip", dependencies: ["OverlayModel", "OverlayCrypto", nioCore, nioPosix, logging],
            exclude: ["README.md"]),
        .target(name: "IPsecKeys", dependencies: ["OverlayModel", "OverlayCrypto", "COpenSSL"], exclude: ["README.md"]),

        // Kernel work.
        .target(name: "Netlink", dependencies: ["OverlayModel", "CNetlink", "COverlayShims"], exclude: ["README.md"]),
        .target(name: "PacketFilter", dependencies: ["CNFTables"]),

        // Features built on the above.
        .target(name: "GWBridge", dependencies: ["OverlayModel", "Netlink", "PacketFilter", "IPAM"]),
        .target(name: "Ingress", dependencies: ["OverlayModel", "Netlink", "PacketFilter"]),
        .target(name: "Discovery", dependencies: ["OverlayModel"], exclude: ["README.md"]),
        .target(
            name: "DiscoveryServer", dependencies: ["Discovery", "OverlayModel", "Netlink", nioCore, nioPosix, logging, metrics],
            exclude: ["README.md"]),
        .target(
            name: "OverlayDriver", dependencies: ["OverlayModel", "VXLANCodec", "Netlink", "IPsecKeys", "PacketFilter", "COverlayShims", logging],
            exclude: ["README.md"]),
        // The API's models, errors and client: what the CLI (or any client) needs, without the
        // manager's store, PKI or TLS.
        .target(name: "OverlayAPI", dependencies: ["OverlayModel", "IPsecKeys", nioCore, nioPosix, nioHTTP1], exclude: ["README.md"]),
        // The manager's parts: the store seam, PKI and join tokens, the scheduler's pure core,
        // network allocation and key rotation; the shared store on SQLite or etcd (its JSON gateway).
        .target(
            name: "ClusterManager",
            dependencies: ["OverlayAPI", "OverlayModel", "IPAM", "IPsecKeys", nioCore, nioPosix, nioTLS, nioSSL, x509, crypto, grdb, asyncHTTPClient],
            exclude: ["README.md"]),
        // What a node runs for the cluster: endpoints published in gossip and programmed as the
        // driver's peers, one typed feed of endpoint events for the load balancers and the DNS.
        .target(
            name: "NodeAgent",
            dependencies: ["OverlayAPI", "OverlayModel", "Gossip", "OverlayDriver", "Ingress", "GWBridge", "Netlink", "Discovery", nioCore, logging], exclude: ["README.md"]),
        // Docker's remote network and IPAM driver protocol: the calls without I/O, and their
        // server on the plugin socket.
        .target(name: "DockerPlugin", dependencies: [hummingbird, hummingbirdCore, httpTypes, nioCore, logging], exclude: ["README.md"]),
        .target(
            name: "ClusterControl",
            dependencies: [
                "OverlayAPI", "ClusterManager", "DockerPlugin", "NodeAgent", "OverlayModel", "IPAM", "Gossip", "OverlayDriver", "Discovery", "DiscoveryServer", "Ingress", "IPsecKeys", "GWBridge", "Netlink",
                "OverlayCrypto", "COverlayShims", logging, nioCore, nioPosix, nioHTTP1, nioTLS, nioSSL, x509, crypto, grdb,
                hummingbird, hummingbirdCore, httpTypes, nioHTTPTypes, serviceLifecycle, metrics, prometheus,
            ],
            exclude: ["README.md"]),
        .target(name: "OverlayTestKit", dependencies: ["OverlayModel", "Netlink", "COverlayShims"]),
        // The CNI plugin's logic (configuration, environment, results, errors) without I/O.
        .target(name: "OverlayCNI", dependencies: ["OverlayAPI"]),

        // Thin executables.
        .executableTarget(name: "overlayd", dependencies: ["ClusterControl", argumentParser, logging, serviceLifecycle, unixSignals]),
        .executableTarget(name: "overlay-cni", dependencies: ["OverlayCNI", "OverlayAPI", "OverlayModel", "Netlink", nioCore, nioPosix]),
        .executableTarget(
            name: "overlayctl", dependencies: ["OverlayAPI", "OverlayTestKit", argumentParser, nioCore, nioPosix]),

        // Examples and benchmarks: programs, not tests.
        .executableTarget(
            name: "three-host-overlay",
            dependencies: ["OverlayModel", "IPAM", "VXLANCodec", "Netlink", "OverlayDriver", "OverlayTestKit", nioCore],
            path: "Examples/ThreeHostOverlay"),
        .executableTarget(
            name: "two-host-overlay", dependencies: ["OverlayModel", "IPAM", "OverlayDriver", "OverlayTestKit"],
            path: "Examples/TwoHostOverlay"),
        .executableTarget(
            name: "gossip-agent", dependencies: ["Gossip", "OverlayModel", "OverlayCrypto"], path: "Examples/gossip-agent"),
        .executableTarget(
            name: "overlay-node",
            dependencies: ["ClusterControl", "Gossip", "OverlayDriver", "OverlayModel", "OverlayTestKit", logging],
            path: "Examples/overlay-node"),
        .executableTarget(
            name: "gossip-bench", dependencies: ["Gossip", "OverlayModel", "OverlayCrypto"], path: "Benchmarks/gossip-bench"),
        .executableTarget(
            name: "overlay-bench",
            dependencies: ["OverlayModel", "VXLANCodec", "IPAM", "Netlink", "OverlayDriver", "IPsecKeys", "OverlayTestKit", nioCore],
            path: "Benchmarks/OverlayBench"),
        .executableTarget(
            name: "control-bench", dependencies: ["ClusterControl", "ClusterManager", "OverlayAPI", "OverlayTestKit", nioCore, nioPosix],
            path: "Benchmarks/ControlBench"),
        .executableTarget(
            name: "dns-bench", dependencies: ["Discovery", "DiscoveryServer", "OverlayModel", "Netlink", "OverlayTestKit"],
            path: "Benchmarks/DNSBench"),
        .executableTarget(
            name: "ingress-bench", dependencies: ["Ingress", "OverlayModel", "Netlink", "PacketFilter", "OverlayTestKit"],
            path: "Benchmarks/IngressBench"),
        .executableTarget(name: "gossip-sim", dependencies: ["Gossip", "OverlayModel"], path: "Benchmarks/gossip-sim"),
        .executableTarget(name: "chaos-soak", dependencies: ["OverlayTestKit", argumentParser], path: "Benchmarks/chaos-soak"),

        // libFuzzer harnesses (Fuzz/, Scripts/fuzz.sh, Documentation/Fuzzing.md). A plain build makes
        // programs that replay input files; Scripts/fuzz.sh builds them with -sanitize=fuzzer.
        .executableTarget(
            name: "fuzz-vxlan", dependencies: ["VXLANCodec", "OverlayModel", nioCore], path: "Fuzz/VXLAN",
            exclude: ["seeds"]),
        .executableTarget(
            name: "fuzz-gossip", dependencies: ["Gossip", "OverlayCrypto", nioCore], path: "Fuzz/Gossip",
            exclude: ["seeds"]),
        .executableTarget(name: "fuzz-model", dependencies: ["OverlayModel"], path: "Fuzz/Model", exclude: ["seeds"]),
        .executableTarget(name: "fuzz-esp", dependencies: ["IPsecKeys", "OverlayCrypto"], path: "Fuzz/ESP", exclude: ["seeds"]),
        .executableTarget(name: "fuzz-dns", dependencies: ["Discovery"], path: "Fuzz/DNS", exclude: ["seeds"]),
        .executableTarget(name: "fuzz-docker", dependencies: ["DockerPlugin"], path: "Fuzz/Docker", exclude: ["seeds"]),
        .executableTarget(name: "fuzz-api", dependencies: ["OverlayAPI"], path: "Fuzz/API", exclude: ["seeds"]),
        .executableTarget(name: "fuzz-records", dependencies: ["NodeAgent", "Discovery", "OverlayModel"], path: "Fuzz/Records", exclude: ["seeds"]),
        .executableTarget(name: "fuzz-cni", dependencies: ["OverlayCNI", "OverlayAPI"], path: "Fuzz/CNI", exclude: ["seeds"]),
        .executableTarget(
            name: "fuzz-rx", dependencies: ["OverlayDriver", "IPsecKeys", "OverlayCrypto", "OverlayModel"], path: "Fuzz/RX",
            exclude: ["seeds"]),

        // Tests.
        .testTarget(name: "OverlayModelTests", dependencies: ["OverlayModel"]),
        .testTarget(
            name: "VXLANCodecTests", dependencies: ["VXLANCodec", "OverlayModel", "Netlink", "OverlayTestKit", nioCore],
            resources: [.copy("Vectors")]),
        .testTarget(name: "IPAMTests", dependencies: ["IPAM", "OverlayModel"]),
        .testTarget(name: "NetlinkTests", dependencies: ["Netlink", "OverlayModel", "OverlayTestKit"]),
        .testTarget(
            name: "OverlayDriverTests",
            dependencies: ["OverlayDriver", "OverlayModel", "IPAM", "Netlink", "OverlayTestKit", "IPsecKeys", "OverlayCrypto"]),
        .testTarget(name: "OverlayTestKitTests", dependencies: ["OverlayTestKit", "Netlink", "OverlayModel"]),
        .testTarget(name: "OverlayCNITests", dependencies: ["OverlayCNI", "OverlayAPI"]),
        .testTarget(name: "DockerPluginTests", dependencies: ["DockerPlugin", nioPosix, logging]),
        .testTarget(name: "OverlayCryptoTests", dependencies: ["OverlayCrypto"]),
        .testTarget(name: "IPsecKeysTests", dependencies: ["IPsecKeys", "OverlayCrypto", "OverlayModel"]),
        .testTarget(name: "DiscoveryTests", dependencies: ["Discovery", "OverlayModel"]),
        .testTarget(
            name: "DiscoveryServerTests",
            dependencies: ["DiscoveryServer", "Discovery", "OverlayModel", "Netlink", "OverlayTestKit", nioCore, nioPosix]),
        .testTarget(name: "IngressTests", dependencies: ["Ingress", "OverlayModel", "Netlink", "PacketFilter", "OverlayTestKit"]),
        .testTarget(name: "PacketFilterTests", dependencies: ["PacketFilter", "Netlink", "OverlayTestKit"]),
        .testTarget(
            name: "GWBridgeTests", dependencies: ["GWBridge", "PacketFilter", "Netlink", "OverlayModel", "IPAM", "OverlayTestKit"]),
        .testTarget(
            name: "ClusterManagerTests",
            dependencies: ["ClusterManager", "OverlayAPI", "OverlayModel", "IPAM", "IPsecKeys", nioCore, nioPosix, nioSSL, x509, crypto]),
        .testTarget(name: "OverlayAPITests", dependencies: ["OverlayAPI", "OverlayModel"]),
        .testTarget(
            name: "NodeAgentTests", dependencies: ["NodeAgent", "OverlayAPI", "OverlayDriver", "OverlayModel", "Ingress", "Discovery", "IPsecKeys", "GWBridge", logging]),
        .testTarget(
            name: "ClusterControlTests",
            dependencies: [
                "ClusterControl", "Gossip", "OverlayDriver", "OverlayModel", "OverlayTestKit", "Netlink", "IPAM",
                nioCore, nioPosix, nioSSL, x509, crypto, hummingbird, logging,
            ]),
        .testTarget(name: "GossipTests", dependencies: ["Gossip", "OverlayModel", "OverlayCrypto", "OverlayTestKit", nioCore, nioPosix]),
    ]
)

// A clean build prints no warnings, and CI keeps it so: in the project's own Swift targets every
// warning is an error (a Swift 6 `Sendable` warning is a data race the compiler could not rule out).
for target in package.targets where target.type != .system && target.type != .binary {
    target.swiftSettings = (target.swiftSettings ?? []) + [.treatAllWarnings(as: .error)]
}
