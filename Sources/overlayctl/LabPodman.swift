import Foundation
import OverlayTestKit

/// Podman on lab hosts (`lab up --podman`): each host gets a mount namespace of its own, kept by
/// a handle under its state directory, in which its overlayd and its podman both run, as on a
/// real host. There:
/// - /sys is the host's network namespace's, with the cgroup v1 hierarchies mounted on a tmpfs
///   (this machine's crun refuses its hybrid cgroup layout);
/// - /run/netns (podman's container namespaces), /var/lib/cni (the CNI cache) and /dev/shm are
///   the host's own;
/// - podman uses the CNI backend, with `overlay-cni` (next to overlayctl) and Debian's plugins,
///   its configuration, storage and networks (`podman/net.d`) under the state directory, and a
///   busybox image (`localhost/busybox:lab`) imported from busybox-static: no registry.
enum LabPodman {
    static func directory(_ lab: LabOptions, _ host: String) -> String { lab.stateDir(host) + "/podman" }
    static func handle(_ lab: LabOptions, _ host: String) -> String { lab.stateDir(host) + "/mntns/mnt" }
    static let image = "localhost/busybox:lab"

    /// Whether the host was made with podman.
    static func isOn(_ lab: LabOptions, _ host: String) -> Bool {
        FileManager.default.fileExists(atPath: directory(lab, host) + "/containers.conf")
    }

    /// The argv prefix that enters the host: its mount and network namespaces.
    static func enter(_ lab: LabOptions, _ host: String) -> [String] {
        ["nsenter", "--mount=\(handle(lab, host))", "--net=/run/netns/\(lab.namespace(host))"]
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
        let mntns = lab.stateDir(host) + "/mntns"
        try run(["/bin/sh", "-ec", """
            mkdir -p \(mntns)
            mount --bind \(mntns) \(mntns)
            mount --make-private \(mntns)
            touch \(mntns)/mnt
            unshare --mount=\(mntns)/mnt --propagation slave true
            nsenter --mount=\(mntns)/mnt --net=/run/netns/\(lab.namespace(host)) /bin/sh -ec '
              umount -l /sys; mount -t sysfs sysfs /sys
              mount -t tmpfs -o mode=755 cgroup_root /sys/fs/cgroup
              for c in cpu cpuacct cpuset memory devices freezer blkio pids; do
                mkdir -p /sys/fs/cgroup/$c; mount -t cgroup -o $c cgroup /sys/fs/cgroup/$c; done
              mkdir -p /sys/fs/cgroup/systemd; mount -t cgroup -o none,name=systemd cgroup /sys/fs/cgroup/systemd
              mkdir -p /run/netns; mount -t tmpfs tmpfs /run/netns
              mkdir -p /var/lib/cni; mount -t tmpfs tmpfs /var/lib/cni
              mount -t tmpfs tmpfs /dev/shm
            '
            """])
    }

    /// The busybox image, made once per lab from busybox-static and imported on the host.
    static func importImage(_ lab: LabOptions, _ host: String) throws {
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
        try run(enter(lab, host) + ["env"] + environment(lab, host) + ["podman", "import", "--quiet", "--change", "CMD [\"/bin/sh\"]", tar, image])
    }

    /// Removes every podman container of the host (before its namespaces go).
    static func tearDown(_ lab: LabOptions, _ host: String) {
        guard isOn(lab, host), FileManager.default.fileExists(atPath: handle(lab, host)) else { return }
        _ = try? Command.run(enter(lab, host) + ["env"] + environment(lab, host) + ["podman", "rm", "-af", "-t", "0"], timeout: 60)
    }

    static func run(_ argv: [String]) throws {
        let r = try Command.run(argv, timeout: 120)
        guard r.succeeded else { throw CLIError("lab --podman: \(argv.prefix(3).joined(separator: " ")) ...: \(r.output.suffix(500))") }
    }
}
