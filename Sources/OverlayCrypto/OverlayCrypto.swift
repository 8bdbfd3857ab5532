import COpenSSL

/// One Swift wrapper over OpenSSL: AES-GCM seal/open, random bytes, zeroized key storage.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").

public enum OverlayCryptoModule {
    /// One line on what this module is for.
    public static let role = "One Swift wrapper over OpenSSL: AES-GCM seal/open, random bytes, zeroized key storage."
}
