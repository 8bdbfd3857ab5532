import ArgumentParser
import OverlayAPI
import Foundation

/// The CLI: Docker's words (swarm, node, network, run, ps, exec, rm, inspect) against the local
/// overlayd's API, plus `lab` for a multi-host lab on one machine. Every error is one line on
/// stderr and a non-zero exit.
struct Overlayctl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "overlayctl",
        abstract: "Drive overlayd: swarms, overlay networks, containers, and a local multi-host lab.",
        discussion: "Talks to the daemon at -H unix:///path (before or after the command), $OVERLAY_HOST, or unix:///run/overlayd/overlayd.sock.",
        version: OverlayVersion.line("overlayctl"),
        subcommands: [
            Info.self, Version.self, Swarm.self, Node.self, Network.self, Service.self, Run.self, PS.self, Exec.self, Logs.self, Stop.self,
            Start.self, Remove.self, InspectContainer.self,
            LabCommand.self,
        ])
}

@main
enum Main {
    static func main() async {
        let arguments = hoistingGlobalHost(Array(CommandLine.arguments.dropFirst()))
        do {
            var command = try Overlayctl.parseAsRoot(arguments)
            if var c = command as? AsyncParsableCommand { try await c.run() } else { try command.run() }
        } catch let e as CLIError {
            FileHandle.standardError.write(Data("overlayctl: \(e.message)\n".utf8))
            exit(e.code)
        } catch {
            let code = Overlayctl.exitCode(for: error)
            if code == .success {
                print(Overlayctl.fullMessage(for: error))
                exit(0)
            }
            // Bad flags and arguments: one line (ArgumentParser's message without the usage).
            let message = Overlayctl.message(for: error).split(separator: "\n").first.map(String.init) ?? "\(error)"
            FileHandle.standardError.write(Data("overlayctl: \(message) (see --help)\n".utf8))
            // `run` with bad flags exits 125, as `docker run` does.
            if arguments.first == "run" { exit(125) }
            exit(code.rawValue == 0 ? 1 : code.rawValue)
        }
    }
}

/// Docker's habit: `overlayctl -H unix:///path info`, the host given before the command. A
/// leading `-H X`, `-H=X`, `--host X` or `--host=X` becomes `$OVERLAY_HOST` for the command
/// (which every command reads when it is given no `-H` of its own).
func hoistingGlobalHost(_ args: [String]) -> [String] {
    var rest = args[...]
    while let first = rest.first {
        var value: String?
        if first == "-H" || first == "--host" {
            guard rest.count >= 2 else { break }
            value = rest[rest.index(after: rest.startIndex)]
            rest = rest.dropFirst(2)
        } else if first.hasPrefix("-H=") || first.hasPrefix("--host=") {
            value = String(first.split(separator: "=", maxSplits: 1).last ?? "")
            rest = rest.dropFirst()
        } else {
            break
        }
        if let value { setenv("OVERLAY_HOST", value, 1) }
    }
    return Array(rest)
}
