import ArgumentParser
import ClusterControl

/// The CLI. It talks to the local daemon once the daemon exists; until then it only tells the
/// truth about that.
struct Overlayctl: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overlayctl",
        abstract: "Drive a local overlayd (not implemented yet: this build ships the libraries only).")

    func run() throws {
        throw ValidationError("overlayctl has no commands in this build yet; use the libraries or `make demo`.")
    }
}

Overlayctl.main()
