import FoundationEssentials
import Glibc

/// swift-overlay's version, the same in `overlayd`, `overlayctl` and the libraries.
public enum OverlayVersion {
    /// The release (semantic versioning).
    public static let version = "0.11.0"
    /// The API's version: the `/v1/...` routes.
    public static let apiVersion = "1"
    /// `linux/amd64`-style, as Docker writes it.
    public static var platform: String { "\(os)/\(arch)" }

    static var os: String {
        #if os(Linux)
        "linux"
        #elseif os(macOS)
        "darwin"
        #else
        "unknown"
        #endif
    }

    static var arch: String {
        #if arch(x86_64)
        "amd64"
        #elseif arch(arm64)
        "arm64"
        #else
        "unknown"
        #endif
    }

    /// What `--version` prints: `overlayd version 0.11.0, API 1, linux/amd64`.
    public static func line(_ program: String) -> String {
        "\(program) version \(version), API \(apiVersion), \(platform)"
    }
}

/// A daemon's version (`GET /v1/version`, Docker's field names).
public struct VersionInfo: Codable, Sendable, Hashable {
    public var Version: String
    public var ApiVersion: String
    public var Os: String
    public var Arch: String
    /// The kernel's release (`uname -r`).
    public var KernelVersion: String

    /// Makes a value from all its fields (what a memberwise initialiser would, but public).
    public init(Version: String, ApiVersion: String, Os: String, Arch: String, KernelVersion: String) {
        self.Version = Version
        self.ApiVersion = ApiVersion
        self.Os = Os
        self.Arch = Arch
        self.KernelVersion = KernelVersion
    }

    /// This process's version, on this kernel.
    public static var current: VersionInfo {
        var u = utsname()
        uname(&u)
        let release = withUnsafeBytes(of: &u.release) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        return VersionInfo(Version: OverlayVersion.version, ApiVersion: OverlayVersion.apiVersion, Os: OverlayVersion.os,
                           Arch: OverlayVersion.arch, KernelVersion: release)
    }
}
