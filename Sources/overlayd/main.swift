import ArgumentParser
import ClusterControl

/// The reference daemon. Its control plane arrives with the control-plane issue; until then it
/// only tells the truth about that.
struct Overlayd: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overlayd",
        abstract: "The swift-overlay daemon (not implemented yet: this build ships the libraries only).")

    func run() throws {
        throw ValidationError("overlayd is not implemented in this build yet; use the libraries or `make demo`.")
    }
}

Overlayd.main()
