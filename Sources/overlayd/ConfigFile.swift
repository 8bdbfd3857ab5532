import Foundation

/// overlayd's configuration file (`/etc/overlayd/daemon.json`, as dockerd's `daemon.json`): one
/// JSON object whose keys are overlayd's long flag names without the leading dashes, e.g.
/// `{"metrics-addr": "127.0.0.1:9323", "dns": ["10.0.0.53"], "fast-gossip": false}`. Its
/// settings count as flags given before the command line's; a flag given on the command line wins
/// over the file's setting of the same name.
struct ConfigFile {
    /// Where overlayd looks when `--config-file` is not given (a missing file there is no error).
    static let defaultPath = "/etc/overlayd/daemon.json"

    /// What a setting's value must be.
    enum Kind {
        case string, integer, flag, strings
    }

    /// Every setting the file may hold (each an `overlayd` flag).
    static let kinds: [String: Kind] = [
        "state-dir": .string, "socket": .string, "group": .string, "listen-addr": .string, "advertise-addr": .string,
        "data-path-addr": .string, "data-path-port": .integer, "gossip-port": .integer, "hostname": .string, "dns": .strings,
        "datapath": .string, "log-level": .string, "log-format": .string, "fast-gossip": .flag,
        "manager-max-connections": .integer, "manager-max-connections-per-source": .integer, "manager-request-timeout": .integer,
        "max-addresses-per-node": .integer, "dns-forwards-per-container": .integer, "gossip-streams-per-source": .integer,
        "orphaned-address-grace": .integer, "metrics-addr": .string, "cluster-store": .string, "cluster-store-opt": .strings,
        "docker-plugin-socket": .string, "docker-host": .string,
    ]

    /// One setting: the flags it stands for and the line it is on.
    struct Setting {
        var key: String
        var arguments: [String]
        var line: Int
    }

    /// A file that cannot be used: the sentence says where and why.
    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    let path: String
    let settings: [Setting]

    /// The file `arguments` name with `--config-file` (or the default one, if it exists), and
    /// nil when there is none to read.
    static func load(for arguments: [String]) throws(Failure) -> ConfigFile? {
        var named: String?
        for (i, a) in arguments.enumerated() {
            if a == "--" { break }
            if a == "--config-file", i + 1 < arguments.count { named = arguments[i + 1] }
            if a.hasPrefix("--config-file=") { named = String(a.dropFirst("--config-file=".count)) }
        }
        let path = named ?? defaultPath
        guard FileManager.default.fileExists(atPath: path) else {
            if named != nil { throw Failure(description: "the configuration file \(path) does not exist") }
            return nil
        }
        guard let data = FileManager.default.contents(atPath: path) else {
            throw Failure(description: "cannot read the configuration file \(path)")
        }
        return ConfigFile(path: path, settings: try parse(data, path: path))
    }

    /// The settings in `data`, each checked against its flag's kind.
    static func parse(_ data: Data, path: String) throws(Failure) -> [Setting] {
        let text = String(decoding: data, as: UTF8.self)
        func line(atCharacter offset: Int) -> Int {
            text.utf8.prefix(offset).reduce(1) { $0 + ($1 == UInt8(ascii: "\n") ? 1 : 0) }
        }
        func line(of key: String) -> Int {
            guard let r = text.range(of: "\"\(key)\"") else { return 1 }
            return text[..<r.lowerBound].reduce(1) { $0 + ($1 == "\n" ? 1 : 0) }
        }
        let object: Any
        do {
            object = try JSONSerialization.jsonObject(with: data)
        } catch {
            let why = (error as NSError).userInfo[NSDebugDescriptionErrorKey] as? String ?? "\(error)"
            let at = why.range(of: #"character (\d+)"#, options: .regularExpression)
                .flatMap { Int(why[$0].split(separator: " ").last ?? "") }
            let place = at.map { "line \(line(atCharacter: $0))" } ?? "line 1"
            throw Failure(description: "\(path) \(place): not valid JSON (\(why))")
        }
        guard let settings = object as? [String: Any] else {
            throw Failure(description: "\(path) line 1: the file must hold one JSON object of settings, e.g. {\"log-level\": \"debug\"}")
        }
        var out: [Setting] = []
        for (key, value) in settings.sorted(by: { line(of: $0.key) < line(of: $1.key) }) {
            let at = line(of: key)
            guard let kind = kinds[key] else {
                let known = kinds.keys.sorted().joined(separator: ", ")
                throw Failure(description: "\(path) line \(at): unknown setting '\(key)'; the settings are overlayd's flags without the leading dashes: \(known)")
            }
            let flag = "--" + key
            func wrong(_ what: String) -> Failure { Failure(description: "\(path) line \(at): '\(key)' must be \(what)") }
            switch kind {
            case .string:
                guard let s = value as? String else { throw wrong("a string") }
                out.append(Setting(key: key, arguments: [flag, s], line: at))
            case .integer:
                guard let n = value as? NSNumber, !isBool(n), let i = Int(exactly: n.doubleValue) else {
                    throw wrong("a whole number")
                }
                out.append(Setting(key: key, arguments: [flag, "\(i)"], line: at))
            case .flag:
                guard let n = value as? NSNumber, isBool(n) else { throw wrong("true or false") }
                out.append(Setting(key: key, arguments: n.boolValue ? [flag] : [], line: at))
            case .strings:
                guard let list = value as? [Any], list.allSatisfy({ $0 is String }) else { throw wrong("a list of strings") }
                out.append(Setting(key: key, arguments: (list as! [String]).flatMap { [flag, $0] }, line: at))
            }
        }
        return out
    }

    /// Whether a number JSONSerialization made is a JSON `true` or `false`.
    static func isBool(_ n: NSNumber) -> Bool { String(cString: n.objCType) == "c" }

    /// The file's settings as flags, leaving out those the command line gives itself.
    func arguments(besides commandLine: [String]) -> [String] {
        let given = Set(commandLine.prefix { $0 != "--" }.compactMap { a -> String? in
            guard a.hasPrefix("--") else { return nil }
            return String(a.dropFirst(2).prefix { $0 != "=" })
        })
        return settings.filter { !given.contains($0.key) }.flatMap(\.arguments)
    }

    /// The setting `message` (an error about a flag) is about, if it came from this file.
    func setting(mentionedIn message: String, besides commandLine: [String]) -> Setting? {
        let given = arguments(besides: commandLine)
        return settings.first { s in !s.arguments.isEmpty && given.contains(s.arguments[0]) && message.contains("--" + s.key) }
    }
}
