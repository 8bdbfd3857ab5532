import COverlayShims
import Glibc

/// A network namespace, held open by a file descriptor this object owns (closed in `deinit`).
///
/// Namespaces made by ``create(named:handleDirectory:)`` live as long as their handle file (a bind
/// mount of the namespace, like `ip netns add` makes) exists, even when no process is inside;
/// ``delete(named:handleDirectory:)`` removes the handle. Code runs inside a namespace through
/// ``run(_:)``, on a dedicated thread that entered it and exits afterwards.
///
/// `@unchecked Sendable`: every stored property is immutable, and the descriptor is only closed in
/// `deinit`, when no other reference exists.
public final class NetworkNamespace: @unchecked Sendable {
    /// A name for messages: the handle file's name, `pid N`, or `current`.
    public let name: String
    /// The handle file this namespace was opened from, if any.
    public let path: String?
    /// The open namespace descriptor (for `setns`, or for moving links into this namespace).
    public let fileDescriptor: Int32

    /// Where `ip netns` keeps its handles. Daemons pass their own state directory instead, so that
    /// several of them on one machine never share names.
    public static let defaultHandleDirectory = "/run/netns"

    private init(fileDescriptor: Int32, name: String, path: String?) {
        self.fileDescriptor = fileDescriptor
        self.name = name
        self.path = path
    }

    deinit { close(fileDescriptor) }

    // MARK: Creating, opening, deleting

    /// Creates a new, empty network namespace and pins it with a handle file
    /// `handleDirectory/name` (what `ip netns add NAME` does for `/run/netns`).
    ///
    /// The directory is created when missing and made a shared mount (bind-mounted onto itself
    /// first when it is not a mount point), so the handle is visible to mount namespaces cloned
    /// later. This also works in a private mount namespace such as `ip netns exec` gives.
    public static func create(
        named name: String, handleDirectory: String = defaultHandleDirectory
    ) throws(NetlinkError) -> NetworkNamespace {
        let op = "create namespace \(name) in \(handleDirectory)"
        try validateName(name, op)
        try prepareHandleDirectory(handleDirectory, op)
        let path = handleDirectory + "/" + name
        let created = Glibc.open(path, O_RDONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0)
        if created < 0 {
            let e = errno
            if e == EEXIST {
                throw NetlinkError(.exists, operation: op, reason: "a namespace handle \(path) already exists")
            }
            throw NetlinkError.posix(e, op)
        }
        close(created)
        var result: Int32 = 0
        do {
            try NamespaceThread.run(op) {
                result = ovl_unshare_net()
                if result == 0 { result = ovl_bind_mount("/proc/thread-self/ns/net", path, 0) }
            }
        } catch {
            unlink(path)
            throw error
        }
        if result < 0 {
            unlink(path)
            throw NetlinkError.posix(-result, op)
        }
        return try open(path: path, name: name)
    }

    /// Opens the namespace pinned at `path` (a bind-mounted handle or `/proc/PID/ns/net`).
    public static func open(path: String) throws(NetlinkError) -> NetworkNamespace {
        let last = path.split(separator: "/").last.map(String.init) ?? path
        return try open(path: path, name: last)
    }

    /// Opens the namespace `name` in `handleDirectory` (as `ip netns exec NAME` would find it).
    public static func open(
        named name: String, handleDirectory: String = defaultHandleDirectory
    ) throws(NetlinkError) -> NetworkNamespace {
        try validateName(name, "open namespace \(name)")
        return try open(path: handleDirectory + "/" + name, name: name)
    }

    /// Opens the network namespace process `pid` is in.
    public static func open(pid: Int32) throws(NetlinkError) -> NetworkNamespace {
        try open(path: "/proc/\(pid)/ns/net", name: "pid \(pid)")
    }

    /// Opens the namespace the calling thread is in (normally the process's).
    public static func current() throws(NetlinkError) -> NetworkNamespace {
        try open(path: "/proc/thread-self/ns/net", name: "current")
    }

    private static func open(path: String, name: String) throws(NetlinkError) -> NetworkNamespace {
        let op = "open namespace \(path)"
        let fd = try errnoCheck(Glibc.open(path, O_RDONLY | O_CLOEXEC), op)
        let check = ovl_is_net_namespace(fd)
        guard check == 1 else {
            close(fd)
            if check < 0 { throw NetlinkError.posix(-check, op) }
            throw NetlinkError.invalid(op, "\(path) is not a network namespace handle")
        }
        return NetworkNamespace(fileDescriptor: fd, name: name, path: path)
    }

    /// Deletes the handle `handleDirectory/name` (lazy unmount, then unlink). The namespace itself
    /// disappears once no process, socket or open handle keeps it alive.
    public static func delete(
        named name: String, handleDirectory: String = defaultHandleDirectory
    ) throws(NetlinkError) {
        let op = "delete namespace \(name) in \(handleDirectory)"
        try validateName(name, op)
        let path = handleDirectory + "/" + name
        let unmounted = ovl_umount_detach(path)
        if unlink(path) != 0 {
            let e = errno
            if !(e == ENOENT && unmounted == 0) { throw NetlinkError.posix(e, op) }
        }
    }

    /// The names of the namespace handles in `handleDirectory`, sorted; empty when it does not exist.
    public static func list(handleDirectory: String = defaultHandleDirectory) -> [String] {
        guard let dir = opendir(handleDirectory) else { return [] }
        defer { closedir(dir) }
        var names: [String] = []
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            if !name.hasPrefix(".") { names.append(name) }
        }
        return names.sorted()
    }

    /// Deletes every handle in `handleDirectory`, undoes the directory's own bind mount and removes
    /// it. For a daemon's state directory or a test's temporary directory, not `/run/netns`.
    public static func removeHandleDirectory(_ handleDirectory: String) throws(NetlinkError) {
        let trimmed = handleDirectory.hasSuffix("/") ? String(handleDirectory.dropLast()) : handleDirectory
        guard trimmed != defaultHandleDirectory, !trimmed.isEmpty else {
            throw NetlinkError.invalid(
                "remove namespace directory \(handleDirectory)",
                "refusing to remove the shared \(defaultHandleDirectory); delete single namespaces with delete(named:)")
        }
        for name in list(handleDirectory: handleDirectory) {
            try delete(named: name, handleDirectory: handleDirectory)
        }
        let unmounted = ovl_umount_detach(handleDirectory)
        if unmounted < 0 && unmounted != -EINVAL && unmounted != -ENOENT {
            throw NetlinkError.posix(-unmounted, "unmount namespace directory \(handleDirectory)")
        }
        if rmdir(handleDirectory) != 0 && errno != ENOENT {
            throw NetlinkError.posix(errno, "remove namespace directory \(handleDirectory)")
        }
    }

    // MARK: Running code inside

    /// Runs `body` on a new thread that has entered this namespace, waits for it, and returns its
    /// result. The thread exits afterwards, so the namespace never leaks into other code. Sockets
    /// opened in `body` stay in this namespace after it returns.
    ///
    /// This blocks the caller until `body` finishes; keep `body` short when calling from async code.
    public func run<T>(_ body: () throws -> T) throws -> T {
        var outcome: Result<T, any Error>?
        try NamespaceThread.run("enter namespace \(name)") {
            let rc = ovl_setns_net(fileDescriptor)
            if rc < 0 {
                outcome = .failure(NetlinkError.posix(-rc, "enter namespace \(name)"))
                return
            }
            outcome = Result { try body() }
        }
        return try outcome!.get()
    }

    /// Like ``run(_:)`` for internal work whose only errors are ``NetlinkError``s.
    func runTyped<T>(_ operation: @autoclosure () -> String, _ body: () throws(NetlinkError) -> T) throws(NetlinkError) -> T {
        var outcome: Result<T, NetlinkError>?
        let op = operation()
        try NamespaceThread.run(op) {
            let rc = ovl_setns_net(fileDescriptor)
            if rc < 0 {
                outcome = .failure(NetlinkError.posix(-rc, op + " (entering namespace \(name))"))
                return
            }
            do throws(NetlinkError) { outcome = .success(try body()) } catch { outcome = .failure(error) }
        }
        return try outcome!.get()
    }

    // MARK: Sysctls

    /// Reads a sysctl as seen inside this namespace (`net.ipv4.ip_forward` or
    /// `net/ipv4/conf/eth0.5/forwarding`), without the trailing newline.
    public func sysctl(_ key: String) throws(NetlinkError) -> String {
        let op = "read sysctl \(key) in namespace \(name)"
        let path = try NetworkNamespace.sysctlPath(key, op)
        return try runTyped(op) { () throws(NetlinkError) -> String in
            let fd = try errnoCheck(Glibc.open(path, O_RDONLY | O_CLOEXEC), op)
            defer { close(fd) }
            var bytes: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n < 0 { throw NetlinkError.posix(errno, op) }
                if n == 0 { break }
                bytes += buffer[0..<n]
            }
            var text = String(decoding: bytes, as: UTF8.self)
            while text.hasSuffix("\n") { text.removeLast() }
            return text
        }
    }

    /// Writes a sysctl inside this namespace (`setSysctl("net.ipv4.ip_forward", to: "1")`).
    public func setSysctl(_ key: String, to value: String) throws(NetlinkError) {
        let op = "write sysctl \(key)=\(value) in namespace \(name)"
        let path = try NetworkNamespace.sysctlPath(key, op)
        try runTyped(op) { () throws(NetlinkError) in
            let fd = try errnoCheck(Glibc.open(path, O_WRONLY | O_CLOEXEC), op)
            defer { close(fd) }
            let bytes = Array(value.utf8)
            let n = bytes.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            if n < 0 { throw NetlinkError.posix(errno, op) }
        }
    }

    // MARK: Helpers

    static func sysctlPath(_ key: String, _ op: String) throws(NetlinkError) -> String {
        let allowed = key.utf8.allSatisfy { c in
            (c >= UInt8(ascii: "a") && c <= UInt8(ascii: "z")) || (c >= UInt8(ascii: "A") && c <= UInt8(ascii: "Z"))
                || (c >= UInt8(ascii: "0") && c <= UInt8(ascii: "9"))
                || c == UInt8(ascii: ".") || c == UInt8(ascii: "_") || c == UInt8(ascii: "-") || c == UInt8(ascii: "/")
        }
        let relative = key.contains("/") ? key : key.replacingDots()
        let parts = relative.split(separator: "/", omittingEmptySubsequences: false)
        guard !key.isEmpty, allowed, !parts.contains(where: { $0 == ".." || $0 == "." || $0.isEmpty }) else {
            throw NetlinkError.invalid(op, "'\(key)' is not a sysctl name (like net.ipv4.ip_forward or net/ipv4/conf/eth0.5/forwarding)")
        }
        return "/proc/sys/" + relative
    }

    static func validateName(_ name: String, _ op: String) throws(NetlinkError) {
        guard !name.isEmpty, name != ".", name != "..", !name.contains("/"), name.utf8.count <= 255,
              !name.utf8.contains(0)
        else {
            throw NetlinkError.invalid(op, "'\(name)' is not a namespace name (non-empty, no '/', not '.' or '..')")
        }
    }

    private static let directoryLock = Lock()

    /// Creates `dir` (and parents) and makes it a shared mount, as iproute2 does for /run/netns:
    /// try MS_SHARED; when that fails with EINVAL the directory is not a mount point, so bind-mount
    /// it onto itself first.
    static func prepareHandleDirectory(_ dir: String, _ op: String) throws(NetlinkError) {
        try directoryLock.withLock { () throws(NetlinkError) in
            var prefix = ""
            for part in dir.split(separator: "/") {
                prefix += "/" + part
                if mkdir(prefix, 0o755) != 0 && errno != EEXIST {
                    throw NetlinkError.posix(errno, op + " (creating \(prefix))")
                }
            }
            var rc = ovl_make_shared(dir)
            if rc == -EINVAL {
                try shimCheck(ovl_bind_mount(dir, dir, 1), op + " (bind-mounting \(dir) onto itself)")
                rc = ovl_make_shared(dir)
            }
            try shimCheck(rc, op + " (making \(dir) a shared mount)")
        }
    }
}

extension String {
    fileprivate func replacingDots() -> String {
        String(self.map { $0 == "." ? "/" : $0 })
    }
}
