import Foundation

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// Reads and writes the PKI's PEM files. Writes go to a temporary file created with the final
/// permissions and are renamed into place, so a key file is never readable by others, even briefly.
enum PEMFiles {
    /// Creates `directory` (mode 0700) if it does not exist.
    static func makeDirectory(_ directory: String) throws(PKIError) {
        do {
            try FileManager.default.createDirectory(
                atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        } catch {
            throw PKIError(.storage, "cannot create directory \(directory): \(error.localizedDescription)")
        }
    }

    /// Writes `text` to `path` with permissions `mode` (e.g. 0o600 for keys), atomically.
    static func write(_ text: String, to path: String, mode: mode_t) throws(PKIError) {
        let temporary = path + ".tmp-\(UInt32.random(in: 0...UInt32.max))"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode)
        guard fd >= 0 else {
            throw PKIError(.storage, "cannot create \(temporary): \(String(cString: strerror(errno))); check the directory's permissions")
        }
        var failure: String?
        if fchmod(fd, mode) != 0 { failure = "chmod: \(String(cString: strerror(errno)))" }
        let bytes = Array(text.utf8)
        var offset = 0
        while failure == nil && offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { posixWrite(fd, $0.baseAddress, $0.count) }
            if written < 0 {
                if errno == EINTR { continue }
                failure = "write: \(String(cString: strerror(errno)))"
            } else {
                offset += written
            }
        }
        if failure == nil && fsync(fd) != 0 { failure = "fsync: \(String(cString: strerror(errno)))" }
        close(fd)
        if failure == nil && rename(temporary, path) != 0 { failure = "rename: \(String(cString: strerror(errno)))" }
        if let failure {
            unlink(temporary)
            throw PKIError(.storage, "cannot write \(path) (\(failure))")
        }
    }

    /// The text of `path`.
    static func read(_ path: String) throws(PKIError) -> String {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw PKIError(.storage, "cannot read \(path): missing or unreadable")
        }
        return String(decoding: data, as: UTF8.self)
    }
}

/// `write(2)`; a free function so the name is not shadowed by `PEMFiles.write`.
private func posixWrite(_ fd: Int32, _ buffer: UnsafeRawPointer?, _ count: Int) -> Int {
    write(fd, buffer, count)
}
