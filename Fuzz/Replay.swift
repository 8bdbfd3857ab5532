// Shared by every harness (symlinked into each Fuzz/<name>/ directory): replay of input files
// when a harness is built without -sanitize=fuzzer.
#if canImport(Glibc)
import Glibc
#endif

/// Reads a whole file, or nil if it cannot be opened.
func readWholeFile(_ path: String) -> [UInt8]? {
    guard let f = fopen(path, "rb") else { return nil }
    defer { fclose(f) }
    var out: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 65536)
    while true {
        let n = chunk.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n == 0 { break }
        out.append(contentsOf: chunk[0 ..< n])
    }
    return out
}

/// Runs `body` over every file named on the command line (directories are not walked).
func replayFiles(name: String, _ body: ([UInt8]) -> Void) {
    let paths = CommandLine.arguments.dropFirst()
    if paths.isEmpty {
        print("usage: \(name) FILE... (build with Scripts/fuzz.sh to fuzz)")
        return
    }
    for path in paths {
        guard let bytes = readWholeFile(path) else {
            print("\(name): cannot read \(path)")
            exit(1)
        }
        body(bytes)
        print("\(name): \(path) (\(bytes.count) bytes) ok")
    }
}

#if FUZZING
/// libFuzzer's driver (in the toolchain's libclang_rt.fuzzer); SwiftPM points `main` at the
/// harness's `@main`, so the harness starts libFuzzer itself.
@_silgen_name("LLVMFuzzerRunDriver")
private func LLVMFuzzerRunDriver(
    _ argc: UnsafeMutablePointer<CInt>,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>>,
    _ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> CInt

/// Hands the command line to libFuzzer and fuzzes `callback` until it stops.
func runLibFuzzer(_ callback: @convention(c) (UnsafePointer<UInt8>, Int) -> CInt) -> Never {
    var argc = CommandLine.argc
    var argv = CommandLine.unsafeArgv
    exit(LLVMFuzzerRunDriver(&argc, &argv, callback))
}
#endif
