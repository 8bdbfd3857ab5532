// Shared by every harness (symlinked into each Fuzz/<name>/ directory): replay of input files
// when a harness is built without -sanitize=fuzzer.
#if canImport(Glibc)
import Glibc
#endif
import Dispatch

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

/// Runs `body` on a detached task and returns its value once the task has dropped everything it
/// captured. libFuzzer compares mallocs and frees around each input and, when they differ, asks
/// LeakSanitizer, which most likely cannot follow a reference kept with an enum tag in its spare
/// bits (as `Data` keeps its storage): a task still releasing its closure after the harness
/// returned was reported as a leak (fuzz-cni, 2026-12-07). So the task's job gives up its closure
/// and its result box in its `deinit`, before it signals; the box is then the harness's alone.
func runDetached<T>(_ body: @escaping @Sendable () async -> T) -> T {
    let released = DispatchSemaphore(value: 0)
    let out = DetachedResult<T>()
    // Made in the capture list, so the task's closure holds the only reference to the job.
    Task.detached { [job = DetachedJob(body: body, out: out, released: released)] in await job.run() }
    released.wait()
    guard let value = out.value else { fatalError("the detached task ended without a value") }
    return value
}

/// Where a detached job leaves its value. `@unchecked Sendable`: written by the task before its
/// job is released, read by the harness after the job's `deinit` signalled.
final class DetachedResult<T>: @unchecked Sendable {
    var value: T?
}

/// One detached run's closure and result box, released in `deinit` before the harness is woken.
/// `@unchecked Sendable`: only the task touches it after it is made.
final class DetachedJob<T>: @unchecked Sendable {
    private var body: (@Sendable () async -> T)?
    private var out: DetachedResult<T>?
    private let released: DispatchSemaphore

    init(body: @escaping @Sendable () async -> T, out: DetachedResult<T>, released: DispatchSemaphore) {
        self.body = body
        self.out = out
        self.released = released
    }

    func run() async {
        guard let body else { return }
        out?.value = await body()
    }

    deinit {
        body = nil
        out = nil
        released.signal()
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
