/// Keyrings, rotation, SPI derivation, ESP (RFC 4303/4106) seal/open and SA programmers.
///
/// This module is present so the package's layout is complete; its implementation arrives with
/// its own issue (see README.md, "Module map").
public enum IPsecKeysModule {
    /// One line on what this module is for.
    public static let role = "Keyrings, rotation, SPI derivation, ESP (RFC 4303/4106) seal/open and SA programmers."
}
