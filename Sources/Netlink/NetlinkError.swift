import CNetlink
import Glibc

/// An error from the kernel, libnl or a namespace system call, with what was being done and why it
/// failed, e.g. `add link vxlan4096 (vxlan) in namespace ovl-h1: Object exists`.
///
/// Every failure in this module is turned into a `NetlinkError` here, in one place: libnl's
/// negative return codes by `libnl(_:_:)` (message from `nl_geterror`) and system calls by
/// `posix(_:_:)` (message from `strerror`).
public struct NetlinkError: Error, Hashable, Sendable, CustomStringConvertible {
    /// What kind of failure this was. Extensible: match with `==`, not an exhaustive switch.
    public struct Code: Hashable, Sendable, CustomStringConvertible {
        let name: String
        /// The object (link, address, route, neighbour, namespace) already exists.
        public static let exists = Code(name: "exists")
        /// The object, device or namespace does not exist.
        public static let notFound = Code(name: "notFound")
        /// The caller lacks the privilege (usually: not root / no CAP_NET_ADMIN or CAP_SYS_ADMIN).
        public static let permissionDenied = Code(name: "permissionDenied")
        /// The object is in use.
        public static let busy = Code(name: "busy")
        /// A value was refused before or by the kernel (bad name, prefix, family mix).
        public static let invalidArgument = Code(name: "invalidArgument")
        /// The kernel or libnl does not support the operation.
        public static let unsupported = Code(name: "unsupported")
        /// Anything else (out of memory, socket failures, unexpected replies).
        public static let system = Code(name: "system")
        public var description: String { name }
    }

    /// What kind of failure this was.
    public let code: Code
    /// What was being done, naming the object and namespace: `add link br0 (bridge) in namespace h1`.
    public let operation: String
    /// Why it failed, as libnl or the C library says it (`Object exists`, `No such file or directory`).
    public let reason: String

    /// Makes an error from its parts.
    public init(_ code: Code, operation: String, reason: String) {
        self.code = code
        self.operation = operation
        self.reason = reason
    }

    /// One line for a person: what was being done, then why it failed.
    public var message: String { "\(operation): \(reason)" }
    public var description: String { message }

    /// The error for a libnl return code (negative `-NLE_*`, as libnl functions return them).
    static func libnl(_ rc: Int32, _ operation: String) -> NetlinkError {
        let e = rc < 0 ? -rc : rc
        let code: Code
        switch e {
        case NLE_EXIST: code = .exists
        case NLE_OBJ_NOTFOUND, NLE_NODEV, NLE_NOADDR: code = .notFound
        case NLE_PERM, NLE_NOACCESS: code = .permissionDenied
        case NLE_BUSY: code = .busy
        case NLE_INVAL, NLE_RANGE, NLE_AF_MISMATCH, NLE_MISSING_ATTR, NLE_IMMUTABLE: code = .invalidArgument
        case NLE_OPNOTSUPP, NLE_AF_NOSUPPORT, NLE_MSGTYPE_NOSUPPORT, NLE_SRCRT_NOSUPPORT: code = .unsupported
        default: code = .system
        }
        return NetlinkError(code, operation: operation, reason: String(cString: nl_geterror(e)))
    }

    /// The error for an `errno` value from a system call.
    static func posix(_ errnoValue: Int32, _ operation: String) -> NetlinkError {
        let e = errnoValue < 0 ? -errnoValue : errnoValue
        let code: Code
        switch e {
        case EEXIST: code = .exists
        case ENOENT, ENODEV, ESRCH, ENXIO, EADDRNOTAVAIL: code = .notFound
        case EPERM, EACCES: code = .permissionDenied
        case EBUSY: code = .busy
        case EINVAL, ERANGE, ENAMETOOLONG, ENOTDIR: code = .invalidArgument
        case EOPNOTSUPP, ENOSYS, EAFNOSUPPORT: code = .unsupported
        default: code = .system
        }
        return NetlinkError(code, operation: operation, reason: String(cString: strerror(e)))
    }

    /// An error found by this module before asking the kernel.
    static func invalid(_ operation: String, _ reason: String) -> NetlinkError {
        NetlinkError(.invalidArgument, operation: operation, reason: reason)
    }
}

/// Throws the ``NetlinkError`` for a negative libnl return code; passes other values through.
@discardableResult
@inline(__always)
func nlCheck(_ rc: Int32, _ operation: @autoclosure () -> String) throws(NetlinkError) -> Int32 {
    if rc < 0 { throw NetlinkError.libnl(rc, operation()) }
    return rc
}

/// Throws the ``NetlinkError`` for a shim result in the `-errno` convention; passes others through.
@discardableResult
@inline(__always)
func shimCheck(_ rc: Int32, _ operation: @autoclosure () -> String) throws(NetlinkError) -> Int32 {
    if rc < 0 { throw NetlinkError.posix(-rc, operation()) }
    return rc
}

/// Throws the ``NetlinkError`` for a libc result of -1 with `errno` set; passes others through.
@discardableResult
@inline(__always)
func errnoCheck(_ rc: Int32, _ operation: @autoclosure () -> String) throws(NetlinkError) -> Int32 {
    if rc == -1 { throw NetlinkError.posix(errno, operation()) }
    return rc
}

/// Makes a libnl object with `make`, hands it to `body` and frees it with `free` afterwards, also on
/// error. A nil from `make` (libnl's allocation failure) becomes a ``NetlinkError``.
@inline(__always)
func withObject<R>(
    _ make: () -> OpaquePointer?, free: (OpaquePointer) -> Void, _ operation: @autoclosure () -> String,
    _ body: (OpaquePointer) throws(NetlinkError) -> R
) throws(NetlinkError) -> R {
    guard let p = make() else {
        throw NetlinkError(.system, operation: operation(), reason: "libnl could not allocate an object (out of memory)")
    }
    defer { free(p) }
    return try body(p)
}
