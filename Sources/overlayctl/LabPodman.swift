import Foundation
import OverlayTestKit

/// Podman on lab hosts (`lab up --podman`), in the host's mount namespace (`LabMountNamespace`),
/// which its overlayd shares:
/// - podman uses the CNI backend, with `overlay-cni` (next to overlayctl) and Debian's plugins,
///   its configuration, storage and networks (`podman/net.d`) under the state directory, and a
///   busybox image (`localhost/busybox:lab`) imported from busybox-static: no registry.
enum LabPodman {
    static func directory(_ lab: LabOptions, _ host: String) -> String { lab.stateDir(host) + "/podman" }
    static let image = "localhost/busybox:lab"

    /// Whether the host was made with podman.
    static func isOn(_ lab: LabOptions, _ host: String) -> Bool {
        FileManager.default.fileExists(atPath: directory(lab, host) + "/containers.conf")
    }

    /// What podman needs in its environment on the host.
    static func environment(_ lab: LabOptions, _ host: String) -> [String] {
        let d = directory(lab, host)
        return ["CONTAINERS_CONF=\(d)/containers.conf", "CONTAINERS_STORAGE_CONF=\(d)/storage.conf",
                "CONTAINERS_REGISTRIES_CONF=/dev/null", "XDG_RUNTIME_DIR=\(d)/xdg", "TMPDIR=\(d)/tmp"]
    }

    /// Makes the host's mount namespace and podman's files (before its overlayd starts in it).
    static func setUp(_ lab: LabOptions, _ host: String, pluginDirectory: String) throws {
        for (tool, package) in [("/usr/bin/podman", "podman"), ("/bin/busybox", "busybox-static"), ("/usr/lib/cni/portmap", "containernetworking-plugins")]
        where !FileManager.default.isExecutableFile(atPath: tool) {
            throw CLIError("lab up --podman needs \(tool) (Debian's \(package); `make deps` installs it)")
        }
        let d = directory(lab, host)
        for sub in ["root", "runroot", "tmp", "net.d", "xdg"] {
            try FileManager.default.createDirectory(atPath: "\(d)/\(sub)", withIntermediateDirectories: true,
                                                    attributes: [.posixPermissions: 0o700])
        }
        try """
            [containers]
            # crun cannot raise the limits past the ones it inherits here.
            default_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]
            [network]
            network_backend = "cni"
            cni_plugin_dirs = ["\(pluginDirectory)", "/usr/lib/cni"]
            network_config_dir = "\(d)/net.d"
            [engine]
            cgroup_manager = "cgroupfs"
            events_logger = "file"
            events_logfile_path = "\(d)/tmp/events.log"
            tmp_dir = "\(d)/tmp"
            static_dir = "\(d)/root/libpod"
            volume_path = "\(d)/root/volumes"
            lock_type = "file"
            pull_policy = "never"

            """.write(toFile: d + "/containers.conf", atomically: true, encoding: .utf8)
        try """
            [storage]
            driver = "vfs"
            graphroot = "\(d)/root"
            runroot = "\(d)/runroot"

            """.write(toFile: d + "/storage.conf", atomically: true, encoding: .utf8)
        try LabMountNamespace.make(lab, host)
    }

    /// The busybox image, made once per lab from busybox-static and imported on the host.
    static func importImage(_ lab: LabOptions, _ host: String) throws {
        let tar = try rootfsTar(lab)
        try run(LabMountNamespace.enter(lab, host) + ["env"] + environment(lab, host) + ["podman", "import", "--quiet", "--change", "CMD [\"/bin/sh\"]", tar, image])
    }

    /// A busybox root file system as a tar (made once per lab from busybox-static).
    static func rootfsTar(_ lab: LabOptions) throws -> String {
        let tar = lab.stateRoot + "/busybox.tar"
        if !FileManager.default.fileExists(atPath: tar) {
            let r = lab.stateRoot + "/busybox-rootfs"
            try run(["/bin/sh", "-ec", """
                rm -rf \(r); mkdir -p \(r)/bin \(r)/sbin \(r)/usr/bin \(r)/usr/sbin \(r)/etc \(r)/proc \(r)/sys \(r)/dev \(r)/tmp \(r)/root \(r)/var \(r)/run
                cp /bin/busybox \(r)/bin/busybox
                chroot \(r) /bin/busybox --install -s
                # busybox-static's glibc reads only these: no NSS module to load.
                echo 'hosts: files dns' > \(r)/etc/nsswitch.conf
                tar -C \(r) -cf \(tar) .
                """])
        }
        return tar
    }

    /// Removes every podman container of the host (before its namespaces go).
    static func tearDown(_ lab: LabOptions, _ host: String) {
        guard isOn(lab, host), LabMountNamespace.exists(lab, host) else { return }
        _ = try? Command.run(LabMountNamespace.enter(lab, host) + ["env"] + environment(lab, host) + ["podman", "rm", "-af", "-t", "0"], timeout: 60)
    }

    static func run(_ argv: [String]) throws {
        let r = try Command.run(argv, timeout: 120)
        guard r.succeeded else { throw CLIError("lab --podman: \(argv.prefix(3).joined(separator: " ")) ...: \(r.output.suffix(500))") }
    }
}
